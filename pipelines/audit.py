"""The audit's outputs, for every benchmark: ``audit.json``, ``audit.md``, ``recovery.png`` and
``logit_lens.png`` (written by ``amnesia audit`` and a run's ``audit`` stage), and the report
section and summary entry built from them. The attacks themselves are :mod:`unlearn.audit`.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from pipelines.report import fmt, md_table, pyplot, save_figure
from tracing.io import write_json, write_text
from tracing.plots import layer_axis

ATTACK_NAMES = {
    "bf16": "bfloat16 weights", "int8": "8-bit (LLM.int8)", "nf4": "4-bit NF4", "int4": "4-bit int, groups of 128",
    "relearn_forget": "relearn on half the forget rows", "relearn_retain": "relearn on retain rows", "relearn_related": "relearn on never-seen text",
    "paraphrase": "paraphrased questions", "context": "other people's QA first",
}
NOTE = ("Recovery = (attacked − base) / (target − base) per forget metric, every value measured by the audit on the same rows "
        "(relearn on half the forget rows: scored on the other half). The base is the unlearned model's level, or the floor — "
        "the never-seen model (trained without the forget rows) under the same attack, in brackets — where that is higher: "
        "an attack also teaches what any model could learn (a template, an answer format), and climbing back to never-seen "
        "is not recovering. 0 = nothing came back above the floor (below it reads 0), 1 = the target's level (for the probes: the "
        "target's level under the same probe; – where the target cannot answer that way either, or the floor is at the target's level); "
        "the worst case is taken over the knowledge metrics (a membership AUC is shown beside them). "
        "A high recovery means the knowledge was hidden, not removed; read it beside the retain columns — an attack that "
        "brings the forget metrics back by breaking the model (retain × far below 1) is not a recovery.")


def audit_table(audit: dict) -> tuple[list[str], list[list[str]]]:
    """Rows = attacks; columns = recovery of each forget metric, then each retain metric (× the unlearned model's)."""
    forget, retain = audit["forget_metrics"], audit["retain_metrics"]
    head = ["attack"] + [f"{m} recovered (floor)" for m in forget] + [f"{m} ×" for m in retain]
    rows = []
    for attack, rec in audit["recovery"].items():
        ratio = audit["retain_ratio"].get(attack, {})
        floor = (audit.get("floor") or {}).get(attack, {})
        rows.append([ATTACK_NAMES.get(attack, attack)] + [recovered_cell(rec.get(m), floor.get(m)) for m in forget] + [fmt(ratio.get(m)) for m in retain])
    return head, rows


def recovered_cell(value: float | None, floor: float | None) -> str:
    """A recovery with the never-seen model's score under the same attack, when measured: ``0.05 (0.41)``."""
    return fmt(value) if floor is None else f"{fmt(value)} ({fmt(floor)})"


def floor_text(audit: dict) -> str:
    """Which never-seen model the recovery is read against, or why none."""
    if audit.get("floor_model"):
        return (f"Recovery counts what rises above the never-seen model ({audit['floor_model']!r}: trained without the forget rows) "
                "under the same attack; its score is in brackets.")
    return ("No never-seen model was attacked (a retain model: trained without the forget rows), so recovery is read from the unlearned "
            "level alone — an upper bound: what any model learns from the attack (a template, an answer format) counts as recovered.")


def scores_table(audit: dict) -> tuple[list[str], list[list[str]]]:
    """Every model's measured metrics before and after each attack (the numbers recovery is computed from)."""
    metrics = audit["forget_metrics"] + audit["retain_metrics"]
    head = ["model", "attack"] + metrics
    rows = []
    for label, by_attack in audit["scores"].items():
        for attack, scores in by_attack.items():
            name = {"none/all": "none", "none/held_out": "none (held-out half)"}.get(attack, ATTACK_NAMES.get(attack, attack))
            rows.append([label, name] + [fmt(scores.get(m)) for m in metrics])
    return head, rows


def worst_text(audit: dict) -> str:
    w = audit.get("worst_case")
    if not w:
        return "no recovery could be measured (the target and the unlearned model agree on every forget metric)"
    return f"{w['recovery']:.2f} ({w['metric']}, {ATTACK_NAMES.get(w['attack'], w['attack'])})"


def audit_markdown(audit: dict, images: dict[str, str] | None = None, *, level: str = "##") -> list[str]:
    """The audit's report section: the worst case, the recovery table, the figures, the measured scores."""
    lines = [f"{level} Audit: forgotten or only hidden?", "",
             f"Worst-case recovery: **{worst_text(audit)}**. Relearning rate {audit['relearn_lr']:.3g} ({audit['relearn_lr_source']}), "
             f"{audit['settings']['relearn_steps']} steps of {audit['settings']['relearn_batch_size']} rows. {floor_text(audit)}", ""]
    lines += [md_table(*audit_table(audit)), "", NOTE, ""]
    for key, caption in (("recovery", "Recovery per attack"), ("logit_lens", "Logit lens")):
        if images and images.get(key):
            lines += [f"![{caption}]({images[key]})", ""]
    lines += ["<details><summary>Measured scores</summary>", "", md_table(*scores_table(audit)), "", "</details>", ""]
    return lines


def plot_recovery(audits: dict[str, dict], path: Path) -> Path | None:
    """A table in colour: a row per audited model, a column per attack, each cell the highest recovery
    over the worst-case metrics (annotated; white = nothing came back, dark red = the target's level)."""
    audits = {k: a for k, a in audits.items() if a.get("recovery")}
    if not audits:
        return None
    plt = pyplot()
    attacks = list(next(iter(audits.values()))["recovery"])
    grid = []
    for audit in audits.values():
        metrics = audit.get("worst_case_metrics") or audit["forget_metrics"]
        grid.append([max([v for m, v in audit["recovery"].get(a, {}).items() if v is not None and m in metrics], default=float("nan")) for a in attacks])
    fig, ax = plt.subplots(figsize=(1.15 * len(attacks) + 2.6, 0.42 * len(audits) + 1.6))
    image = ax.imshow(grid, cmap="Reds", vmin=0, vmax=1, aspect="auto")
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            if value == value:  # not NaN
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value > 0.6 else "black")
    ax.set_xticks(range(len(attacks)))
    ax.set_xticklabels([textwrap.fill(ATTACK_NAMES.get(a, a), 16) for a in attacks], fontsize=7)
    ax.set_yticks(range(len(audits)))
    ax.set_yticklabels(list(audits), fontsize=8)
    metrics = next(iter(audits.values())).get("worst_case_metrics") or []
    ax.set_title("Recovery per attack above the never-seen floor: (attacked − base) / (target − base), highest of " + ", ".join(metrics), fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02).ax.tick_params(labelsize=7)
    return save_figure(fig, path)


def plot_logit_lens(audit: dict, path: Path) -> Path | None:
    """One line per model: the mean probability of the forget answers' first token read from each layer."""
    lens = audit.get("logit_lens")
    if not lens or not lens.get("mean_probability"):
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    n = max(len(v) for v in lens["mean_probability"].values())
    for layer in lens.get("layers") or []:
        ax.axvspan(layer - 0.5, layer + 0.5, color="#f2d4a6", alpha=0.5, lw=0)
    for label, values in lens["mean_probability"].items():
        ax.plot(range(len(values)), values, marker="o" if n <= 12 else None, ms=3, label=label)
    layer_axis(ax, n)
    ax.set_xlabel("layer (shaded: the unlearned layers)")
    ax.set_ylabel("p(answer's first token)")
    ax.set_title("Logit lens on the forget facts: each layer's output through the final norm and head", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def write_audit(out: Path, audit: dict) -> dict[str, str]:
    """Write audit.json, recovery.png, logit_lens.png and audit.md into ``out``; return the figure names written."""
    out.mkdir(parents=True, exist_ok=True)
    images = {}
    if plot_recovery({"unlearned": audit}, out / "recovery.png"):
        images["recovery"] = "recovery.png"
    if plot_logit_lens(audit, out / "logit_lens.png"):
        images["logit_lens"] = "logit_lens.png"
    write_json(out / "audit.json", audit)
    write_text(out / "audit.md", "\n".join(audit_markdown(audit, images, level="#")))
    return images


def control_label(stage: str) -> str:
    """``control_<label>_audit`` → ``<label>``."""
    return stage[len("control_"):-len("_audit")]


def run_audit_summary(run_dir: Path, results: dict, *, default: str = "default") -> tuple[dict | None, dict]:
    """What a run's report keeps of its audit stages (``results``: the run's stages): the unlearned
    model's audit (summary.json key ``audit``, with ``controls``: each control's worst case) and the
    figures (``audit_recovery``: a row per audited model, a column per attack; ``logit_lens``)."""
    if "audit" not in results:
        return None, {}
    import json

    def read(stage: str) -> dict:
        return json.loads((results[stage].path / "audit.json").read_text(encoding="utf-8"))

    audit = read("audit")
    controls = {control_label(name): read(name) for name in results if name.startswith("control_") and name.endswith("_audit")}
    entry = {k: audit.get(k) for k in ("forget_metrics", "retain_metrics", "worst_case_metrics", "recovery", "floor_model", "floor", "recovery_from_unlearned",
                                   "retain_ratio", "worst_case", "relearn_lr", "relearn_lr_source",
                                   "scores", "logit_lens", "settings", "rows", "attacks")}
    entry["controls"] = {label: a["worst_case"] for label, a in controls.items()}
    images = {}
    figure = Path("figures") / "audit_recovery.png"
    if plot_recovery({default: audit, **controls}, run_dir / figure):
        images["audit_recovery"] = str(figure)
    if (results["audit"].path / "logit_lens.png").is_file():
        images["logit_lens"] = str(Path(results["audit"].path.name) / "logit_lens.png")
    return entry, images


def worst_recovery(summary: dict, label: str | None = None) -> float | None:
    """The worst-case recovery of the run's unlearned model (``label`` None) or of one control, from summary.json."""
    audit = summary.get("audit") or {}
    worst = audit.get("worst_case") if label is None else (audit.get("controls") or {}).get(label)
    return worst["recovery"] if worst else None


def report_lines(entry: dict, images: dict) -> list[str]:
    """The run report's audit section."""
    return audit_markdown(entry, {"recovery": images.get("audit_recovery"), "logit_lens": images.get("logit_lens")})


def notes_and_audit_lines(s: dict, images: dict) -> list[str]:
    """Every benchmark's report after its own table: the notes, then the audit section (where the run has one)."""
    out = ["## Notes", ""] + [f"* {n}" for n in s["notes"]] + [""] if s.get("notes") else []
    return out + (report_lines(s["audit"], images) if s.get("audit") else [])


def print_run_end(summary: dict, run_dir) -> None:
    """The end of every benchmark's terminal headline: the audit lines (where the run has one), the notes, where the report is."""
    if summary.get("audit"):
        print_audit(summary["audit"])
    for note in summary.get("notes", []):
        print(f"note: {note}")
    print(f"\nreport: {run_dir / 'report.html'} (and report.md, summary.json)")


def print_audit(entry: dict) -> None:
    """The terminal's audit lines: the worst case, then per attack the recovery of each forget metric and the lowest retain ratio."""
    print(f"\naudit: worst-case recovery {worst_text(entry)}" + (f", above the never-seen model {entry['floor_model']!r}" if entry.get("floor_model")
                                                                    else " (no never-seen model attacked: an upper bound)"))
    forget = entry["forget_metrics"]
    widths = [max(len(m), 6) + 2 for m in forget]
    print(f"  {'attack':<34}" + "".join(f"{m:>{w}}" for m, w in zip(forget, widths)) + f"{'retain × (lowest)':>20}")
    for attack, rec in entry["recovery"].items():
        ratio = [v for v in entry["retain_ratio"].get(attack, {}).values() if v is not None]
        print(f"  {ATTACK_NAMES.get(attack, attack):<34}" + "".join(f"{fmt(rec.get(m)):>{w}}" for m, w in zip(forget, widths))
              + f"{fmt(min(ratio)) if ratio else '–':>20}")
    for label, worst in (entry.get("controls") or {}).items():
        print(f"  control {label:<26} worst-case recovery {fmt(worst['recovery']) if worst else '–'}")
