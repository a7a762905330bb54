"""Run the audit: every attack on the unlearned model (and, as references, on the target and a
never-seen model — the retain model: trained without the forget rows), each scored with the
benchmark's own forget and retain metrics, and the recovery.

A benchmark gives the audit an :class:`AuditTask`: its metrics on a model (all scored rows, or the
held-out half of the forget rows), the rows each relearning attack trains on, and the facts the
logit lens reads. Recovery, per forget metric, is ``(attacked − base) / (target − base)`` with every
value measured by the audit itself, on the same rows and with the same generation budget
(relearn_forget: on the held-out half). ``base`` is the unlearned model's level, or — where the
never-seen model *under the same attack* is closer to the target — that floor: an attack also
teaches what any model could learn (a document template, an answer format), and a model that
forgot past never-seen and climbs back to the floor has recovered nothing (../shared/REFERENCES.md,
docs/audit.md). 0 = nothing came back above the floor, 1 = the target's level — for a probe (a
changed prompt), the target's level under the same probe (:func:`probe_recovery`: none where the
target itself does not answer that way). Without a never-seen model (or with its attacks not run)
the base is the unlearned level: an upper bound. The worst case is the highest recovery of any
attack on the benchmark's knowledge metrics (``AuditTask.worst_case_metrics``).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

from tracing.errors import AmnesiaError

from .config import FALLBACK_RELEARN_LR, PROBES, RELEARN, AuditConfig
from .quantize import SCHEMES

SCHEMA = 1
HELD_OUT = "held_out"


class AuditTask:
    """What a benchmark gives the audit (SemEval: :mod:`pipelines.semeval.audit`, TOFU: :mod:`pipelines.tofu.audit`).

    ``forget_metrics`` are the ones whose recovery is measured (in either direction: recovery is
    read towards the target's value, so a truth ratio or a forget quality that falls as knowledge
    returns works too); ``retain_metrics`` are shown beside them. :meth:`score` returns both for ``part``
    ``"all"`` (every scored row) or ``"held_out"`` (the forget rows relearn_forget does not train on;
    a metric that cannot be read there is None). ``worst_case_metrics``: the knowledge metrics the
    worst case is taken over (a membership AUC, say, is shown but left out).
    """

    benchmark: str = ""
    forget_metrics: tuple[str, ...] = ()
    retain_metrics: tuple[str, ...] = ()
    #: the forget metrics the worst case is taken over (default: all of them); the others are shown beside it
    worst_case_metrics: tuple[str, ...] | None = None

    def score(self, model, tokenizer, part: str = "all", probe: str | None = None) -> dict[str, float | None]:
        """The metrics of ``model`` on ``part``; with ``probe`` (``paraphrase``, ``context``) on the
        forget prompts changed that way (a metric the probe does not read is None)."""
        raise NotImplementedError

    def scored_pairs(self, tokenizer, part: str = "all") -> list[tuple[str, str]]:
        """The rendered ``(prompt, answer)`` of every row :meth:`score` reads for ``part``."""
        raise NotImplementedError

    seed: int = 0  #: the seed of the forget half and of the relearning rows' sample

    def relearn_pool(self, tokenizer, attack: str) -> list[tuple[str, str]]:
        """Every rendered ``(prompt, answer)`` row the relearning ``attack`` may train on (none the audit scores for it)."""
        raise NotImplementedError

    def relearn_pairs(self, tokenizer, attack: str, rows: int | None) -> list[tuple[str, str]]:
        """The rows the relearning ``attack`` trains on: its pool, a seeded sample of ``rows`` of it (default:
        as many as relearn_forget's pool, the same amount of text for every attack)."""
        if attack not in RELEARN:
            raise AmnesiaError(f"audit attack {attack!r}: not a relearning attack (expected one of {', '.join(RELEARN)})")
        pairs = self.relearn_pool(tokenizer, attack)
        n = rows if rows is not None else len(self.relearn_pool(tokenizer, "relearn_forget"))
        return random.Random(f"audit-{self.seed}-{attack}").sample(pairs, n) if len(pairs) > n else pairs

    def lens_facts(self, tokenizer) -> list[tuple[str, str]]:
        """The rendered ``(prompt, answer)`` forget facts the logit lens reads."""
        raise NotImplementedError

    def describe(self) -> dict:
        """What the rows are (counts, the held-out split), for audit.json."""
        return {}


def relearn_rate(config: AuditConfig, target_path: str | Path | None) -> tuple[float, str]:
    """``(rate, where it came from)``: the configured number, or the target's training rate scaled
    to the relearning batch by the linear scaling rule (its target.json, written by make-target:
    ``learning_rate × relearn_batch_size / batch_size``), or the fallback."""
    import json

    if config.relearn_lr != "auto":
        return float(config.relearn_lr), "configured"
    if target_path is not None:
        manifest = Path(target_path) / "target.json"
        if manifest.is_file():
            try:
                record = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                record = {}
            lr, batch = record.get("learning_rate"), (record.get("config") or {}).get("batch_size")
            if isinstance(lr, (int, float)) and lr > 0 and isinstance(batch, int) and batch > 0:
                return float(lr) * config.relearn_batch_size / batch, f"the target's rate {lr:g} at batch {batch}, scaled to batch {config.relearn_batch_size} ({manifest})"
    return FALLBACK_RELEARN_LR, "no target.json beside the target: the fallback rate"


def floor_base(unlearned: float | None, target: float | None, floor: float | None) -> float | None:
    """Where recovery starts: the unlearned level, or the never-seen ``floor`` where that is closer to the target."""
    if unlearned is None or target is None or floor is None:
        return unlearned
    return floor if (floor - unlearned) * (target - unlearned) > 0 else unlearned


def recovery(attacked: float | None, unlearned: float | None, target: float | None, floor: float | None = None) -> float | None:
    """``(attacked − base) / (target − base)``, base = :func:`floor_base`; None when a value is
    missing, the target and the unlearned model agree, or the floor is at or past the target's level
    (nothing above it to recover). Below a floor that is the base reads 0 (still never-seen: the
    distance is the model's own over-forgetting, not the attack's doing); from the unlearned level a
    negative value says the attack took the model further from the target."""
    if attacked is None or unlearned is None or target is None or abs(target - unlearned) < 1e-9:
        return None
    base = floor_base(unlearned, target, floor)
    if (target - base) * (target - unlearned) <= 0 or abs(target - base) < 1e-9:
        return None
    value = (attacked - base) / (target - base)
    return max(value, 0.0) if base != unlearned else value


def shots_that_fit(tokenizer, shots: Sequence[str], prompts: Sequence[str], answers: Sequence[str], context: int | None, margin: int = 8) -> int:
    """How many of ``shots`` (in order) fit before the longest ``prompt + answer`` within ``context`` tokens (``margin`` to spare)."""
    if context is None:
        return len(shots)
    longest = max(len(tokenizer(p + a)["input_ids"]) for p, a in zip(prompts, answers))
    n = 0
    while n < len(shots) and longest + len(tokenizer("".join(shots[: n + 1]), add_special_tokens=False)["input_ids"]) + margin <= context:
        n += 1
    return n


#: A probe is read only where the target, asked that way, keeps this share of its lead over the unlearned model.
PROBE_READABLE = 0.25


def probe_recovery(attacked: float | None, unlearned: float | None, target: float | None, target_probed: float | None,
                   floor: float | None = None) -> float | None:
    """A probe's recovery: :func:`recovery` with the target under the probe as its top; None when the
    target, asked that way, keeps less than :data:`PROBE_READABLE` of its lead over the base (a
    target that cannot answer re-worded questions leaves nothing to read). ``floor``: the never-seen
    model under the same probe."""
    base = floor_base(unlearned, target, floor)
    gap = None if target is None or base is None else target - base
    if target_probed is None or base is None or not gap or (target_probed - base) / gap < PROBE_READABLE:
        return None
    return recovery(attacked, unlearned, target_probed, floor)


def part_of(attack: str) -> str:
    return HELD_OUT if attack == "relearn_forget" else "all"


def attack_model(load: Callable[[], tuple], task: AuditTask, attack: str, config: AuditConfig, lr: float) -> tuple[dict, dict]:
    """Load a fresh copy, apply ``attack``, score it; ``(scores, what the attack did)``."""
    from .quantize import quantize_model
    from .relearn import encode_pairs, overlap, relearn

    model, tok = load()
    if attack in SCHEMES:
        info = quantize_model(model, attack)
    elif attack in PROBES:
        info = {"probe": attack}
    elif attack in RELEARN:
        pairs = task.relearn_pairs(tok, attack, config.relearn_rows)
        clash = overlap(encode_pairs(tok, pairs), encode_pairs(tok, task.scored_pairs(tok, part_of(attack))))
        if clash:
            raise AmnesiaError(f"audit {attack}: {clash} scored rows are among the rows it trains on (expected none)")
        info = relearn(model, tok, pairs, steps=config.relearn_steps, lr=lr, batch_size=config.relearn_batch_size, seed=config.seed)
    else:
        raise AmnesiaError(f"audit attack {attack!r}: unknown")
    t = time.time()
    scores = task.score(model, tok, part_of(attack), probe=attack if attack in PROBES else None)
    info["score_s"] = round(time.time() - t, 3)
    return scores, info


def run_audit(models: dict[str, str], task: AuditTask, config: AuditConfig, *, load: Callable[[str], tuple],
              target: str = "target", unlearned: str = "unlearned", floor: str | None = "retain", log: Callable[[str], None] = print,
              layers: Sequence[int] | None = None, known: dict | None = None) -> dict:
    """Audit ``models[unlearned]`` (and, with ``config.references``, the other ``models``: label → path)
    with ``task``; ``load(path)`` gives ``(model, tokenizer)``. ``floor``: the label of the never-seen
    model among ``models`` (recovery counts only what rises above it under the same attack; absent:
    none). ``known``: an earlier audit of the same references on the same rows, whose scores (attacked
    too) and lens are reused for them (the controls of a run). ``layers``: the unlearned layers,
    shaded in the logit-lens figure. Returns audit.json's content."""
    config.check()
    if unlearned not in models or target not in models:
        raise AmnesiaError(f"audit: needs the {unlearned!r} and {target!r} models, got {sorted(models)}")
    started = time.time()
    lr, lr_source = relearn_rate(config, models[target])
    audited = [unlearned, target] + [m for m in models if m not in (unlearned, target)]
    parts = ["all"] + ([HELD_OUT] if "relearn_forget" in config.attacks else [])
    results: dict[str, dict] = {}
    lens: dict[str, list[float]] = {}
    attacks_info: dict[str, dict] = {}
    for label in audited:  # every model's own scores (recovery needs the target's) and lens; the attacks on the references when asked
        path = models[label]
        if known and label != unlearned and label in known.get("scores", {}) and not config.references:
            results[label] = dict(known["scores"][label])  # its own scores, a probe's top and the floor under each attack
            if config.logit_lens and label in ((known.get("logit_lens") or {}).get("mean_probability") or {}):
                lens[label] = known["logit_lens"]["mean_probability"][label]
            continue
        model, tok = load(path)
        results[label] = {f"none/{part}": task.score(model, tok, part) for part in parts}
        if config.logit_lens:
            from .lens import layer_probabilities, mean_by_layer

            lens[label] = mean_by_layer(layer_probabilities(model, tok, task.lens_facts(tok)))
        del model
        if label != unlearned and not config.references:
            continue
        for attack in config.attacks:
            log(f"[audit] {label}: {attack}")
            results[label][attack], info = attack_model(lambda: load(path), task, attack, config, lr)
            if label == unlearned:
                attacks_info[attack] = info
    floor = floor if floor in results and any(a in results[floor] for a in config.attacks) else None  # attacked: references on (or known)
    table = recovery_table(results, task, config.attacks, unlearned=unlearned, target=target, floor=floor)
    return {
        "schema": SCHEMA, "kind": "audit", "benchmark": task.benchmark,
        "models": {label: str(path) for label, path in models.items()},
        "forget_metrics": list(task.forget_metrics), "retain_metrics": list(task.retain_metrics),
        "worst_case_metrics": list(task.worst_case_metrics or task.forget_metrics),
        "attacks": {a: {"part": part_of(a), **attacks_info.get(a, {})} for a in config.attacks},
        "relearn_lr": lr, "relearn_lr_source": lr_source,
        "scores": results, "floor_model": floor,
        "recovery": table["recovery"], "floor": table["floor"], "recovery_from_unlearned": table["recovery_from_unlearned"],
        "worst_case": table["worst_case"], "retain_ratio": table["retain_ratio"],
        "logit_lens": {"layers": layers and list(layers), "mean_probability": lens} if lens else None,
        "rows": task.describe(), "settings": asdict(config), "wall_time_s": round(time.time() - started, 2),
    }


def recovery_table(results: dict[str, dict], task: AuditTask, attacks: Sequence[str], *, unlearned: str = "unlearned", target: str = "target",
                   floor: str | None = None) -> dict:
    """Per attack: the recovery of each forget metric above the never-seen floor (``floor``: its label
    in ``results``; the floor's value under that attack in ``floor``, None where it was not attacked),
    the same read from the unlearned level alone (``recovery_from_unlearned``, the upper bound), the
    attacked/unlearned ratio of each retain metric, and the worst case (the attack and metric with the
    highest recovery)."""
    rec: dict[str, dict] = {}
    raw: dict[str, dict] = {}
    floors: dict[str, dict] = {}
    ratio: dict[str, dict] = {}
    worst = None
    for attack in attacks:
        if attack not in results.get(unlearned, {}):
            continue
        part = part_of(attack)
        base_u = results[unlearned][f"none/{part}"]
        base_t = results[target][f"none/{part}"]
        attacked = results[unlearned][attack]
        floored = (results.get(floor) or {}).get(attack, {}) if floor else {}
        floors[attack] = {m: floored.get(m) for m in task.forget_metrics}
        if attack in PROBES and attack in results[target]:
            probed = results[target][attack]
            rec[attack] = {m: probe_recovery(attacked.get(m), base_u.get(m), base_t.get(m), probed.get(m), floored.get(m)) for m in task.forget_metrics}
            raw[attack] = {m: probe_recovery(attacked.get(m), base_u.get(m), base_t.get(m), probed.get(m)) for m in task.forget_metrics}
        else:
            rec[attack] = {m: recovery(attacked.get(m), base_u.get(m), base_t.get(m), floored.get(m)) for m in task.forget_metrics}
            raw[attack] = {m: recovery(attacked.get(m), base_u.get(m), base_t.get(m)) for m in task.forget_metrics}
        ratio[attack] = {m: (attacked[m] / base_u[m] if attacked.get(m) is not None and base_u.get(m) else None) for m in task.retain_metrics}
        for m, value in rec[attack].items():
            if m not in (task.worst_case_metrics or task.forget_metrics):
                continue
            if value is not None and (worst is None or value > worst["recovery"]):
                worst = {"attack": attack, "metric": m, "recovery": value}
    return {"recovery": rec, "floor": floors, "recovery_from_unlearned": raw, "retain_ratio": ratio, "worst_case": worst}
