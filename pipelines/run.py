"""``amnesia run``: one driver for every benchmark — trace → select → unlearn → re-trace → score.

:class:`Pipeline` holds the stages every benchmark shares, each a folder of the run directory
(see :mod:`pipelines.stages` for caching), and :meth:`Pipeline.execute` runs them in one order:

the data (``world/`` or a benchmark's own folder, e.g. TOFU's ``request/``), the target
(``target/`` when the config builds it), the benchmark's reference models (TOFU's
``retain_model/``; with ``unlearn.select_by: forgotten``, ``select_floor/``: the retain model's
validation forget knowledge), ``trace/`` (trace.json, layers.json, heatmaps, aie.png), ``unlearned/`` (the
new model + unlearn.json), ``retrace/`` (the same facts traced on the unlearned model, without the
known-facts filter), one score stage per model (``scores_<label>/``: the benchmark names them),
for controls ``control_<label>/`` (the same unlearning with other layers or methods) with its
``control_<label>_scores/``; a benchmark's own further stages (MUSE's C5/C6 steps,
:meth:`Pipeline.benchmark_stages`); then the benchmark's ``report.md``, ``report.html``,
``summary.json``, and ``config.resolved.yaml``. With ``audit.enabled``, ``audit/`` (and
``control_<label>_audit/``): the attacks of :mod:`unlearn.audit` on the unlearned model.

A benchmark (:mod:`pipelines.benchmarks`) subclasses :class:`Pipeline` with what differs: its
scores (:meth:`Pipeline.evaluate`), its report (:meth:`Pipeline.report`) and, where it has them,
its data, reference models and facts. A stage is skipped when its config and inputs are unchanged
since a completed run; ``force`` reruns everything; an interrupted stage leaves only a ``.tmp-*``
folder, removed on the next run; an interrupted unlearning resumes from its last complete
checkpoint (``checkpoints/`` of the run directory; written every ``unlearn.save_steps`` steps)
when rerun with the same config. The run directory may not be inside the model's or the data's
folder, and an existing folder is used only when it is a run directory (it holds
``config.resolved.yaml``).
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipelines.benchmarks import get_benchmark
from pipelines.config import RunSections, dump_config
from pipelines.stages import RunDir, StageResult, path_fingerprint
from pipelines.target import make_target
from pipelines.trace_stage import run_trace
from tracing.errors import AmnesiaError
from tracing.facts import Fact
from tracing.io import check_creatable, is_inside, write_json, write_text
from unlearn.data import load_semeval
from unlearn.methods import get_method, method_names
from unlearn.models import load_model


@dataclass
class RunOutcome:
    """What :func:`run_pipeline` produced."""

    run_dir: Path
    summary: dict
    stages: dict[str, StageResult]


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def free_model(model) -> None:
    del model
    import gc

    gc.collect()


class Pipeline:
    """The stages of one run, each method one cached stage; :meth:`execute` runs them all.

    A benchmark subclasses it: :meth:`evaluate` (one model's scores, a cached stage) and
    :meth:`report` are its own; :meth:`read_inputs`, :meth:`sources`, :meth:`data_path`,
    :meth:`reference_models`, :meth:`trace_facts` and :meth:`score_stage` have defaults for
    SemEval-layout data that it may override; :meth:`audit_task` gives it the audit."""

    def __init__(self, config: RunSections, run_dir: Path, *, force: bool = False, progress: bool = True, log: Callable[[str], None] = print):
        self.config = config
        self.run = RunDir(run_dir, force=force, log=log)
        self.progress = progress
        self.log = log
        self.floor: float | None = None  # select_by forgotten: the retain model's validation forget knowledge (selection_floor)

    # ------------------------------------------------------------------ inputs
    def data_path(self) -> tuple[str, str]:
        """(path, fingerprint) of the data the stages read (SemEval's layout): by default the configured ``data``."""
        return self.config.data, path_fingerprint(self.config.data)

    def model_path(self, data: str, data_key: str) -> tuple[str, str]:
        if self.config.target is not None:
            return self.target_stage("target", self.config.target, data, data_key)
        return self.config.model, path_fingerprint(self.config.model)

    def target_stage(self, name: str, cfg, data: str, inputs, key=None) -> tuple[str, str]:
        """(path, fingerprint) of a model make-target trains on ``data`` with ``cfg`` (the target, a retain
        model); ``key`` (default ``cfg``) is what the stage's cache key records of it."""

        def build(tmp: Path) -> dict:
            manifest = make_target(data, tmp, cfg, overwrite=True, device=self.config.loading.device, progress=self.progress)
            return {k: manifest[k] for k in ("steps", "seconds", "final_loss", "qa_exact_match", "parameters")}

        res = self.run.stage(name, dataclasses.asdict(key if key is not None else cfg), build, inputs=inputs)
        return str(res.path), res.hash

    def retain_only_model(self, data: str, data_key: str, target: str, target_key: str) -> tuple[str, str]:
        """(path, fingerprint) of the retain model built here (stage ``retain_model``): the run's
        ``target`` recipe on the retain rows only (``train_on: retain``), with the target's tokenizer
        so their losses compare — a model that never saw the forget rows."""
        cfg = dataclasses.replace(self.config.target, train_on="retain", tokenizer=self.config.target.tokenizer or target)
        # the target's tokenizer is named by the target's fingerprint (an input), not by where the run directory lies
        key = dataclasses.replace(cfg, tokenizer=self.config.target.tokenizer or "the target's")
        return self.target_stage("retain_model", cfg, data, [data_key, target_key], key=key)

    def given_or_built_retain_model(self, data: str, data_key: str, target: str, target_key: str) -> dict[str, tuple[str, str]]:
        """``{"retain": (path, fingerprint)}``: the config's ``retain_model`` when the run is given its target
        (TOFU's, MUSE's), else the retain model built beside the target (:meth:`retain_only_model`)."""
        if self.config.target is None:
            return {"retain": (self.config.retain_model, path_fingerprint(self.config.retain_model))}
        return {"retain": self.retain_only_model(data, data_key, target, target_key)}

    # ------------------------------------------------------------------ stages
    def trace_facts(self, model, tokenizer, data: str):
        """What the first trace reads: the data's QA rows (SemEval layout); a benchmark with its own facts overrides it."""
        return load_semeval(data)

    def trace(self, name: str, model_path: str, model_key: str, data: str, data_key: str, facts_from: Path | None = None,
              facts_key: str | None = None) -> StageResult:
        """Trace ``model_path``; with ``facts_from`` (a trace.json; ``facts_key`` its stage's hash when it is
        one of this run's) trace exactly those facts, unfiltered."""
        section = self.config.trace

        def build(tmp: Path) -> dict:
            model, tok = load_model(model_path, self.config.loading)
            if facts_from is None:
                source = self.trace_facts(model, tok, data)
                check = True
            else:
                source = [Fact(prompt=f["prompt"], subject=f["subject"], answer=f["answer"], id=f.get("id", ""), relation=f.get("relation", "")) for f in _read_json(facts_from)["facts"]]
                check = False
            outcome = run_trace(model, tok, source, tmp, section.stage_config(self.config.prompt_format), progress=self.progress, log=self.log, check_prediction=check)
            free_model(model)
            return {"layers": outcome.selection.layers, "kind": outcome.selection.kind, "counts": outcome.summary["counts"], "te": outcome.summary["te"]}

        inputs = [model_key, data_key, facts_key or (path_fingerprint(facts_from) if facts_from else None)]
        return self.run.stage(name, {**dataclasses.asdict(section), "prompt_format": self.config.prompt_format}, build, inputs=inputs)

    def unlearn(self, name: str, model_path: str, model_key: str, data: str, data_key: str, layers, extra_key=None, method: str | None = None) -> StageResult:
        """Unlearn with ``layers`` (a list or a layers.json path) and ``method`` (default: the
        config's); checkpoints resume on a rerun."""
        from unlearn.api import run_unlearning
        from unlearn.trainer import latest_checkpoint

        config = dataclasses.replace(self.config.unlearn, layers=layers if isinstance(layers, list) else str(layers), method=method or self.config.unlearn.method)
        if self.floor is not None:  # select_by forgotten: the retain model's level (selection_floor)
            config = dataclasses.replace(config, select_floor=self.floor)
        cfg_dict = dataclasses.asdict(config)
        if not isinstance(layers, list) and is_inside(Path(layers), self.run.root):
            # a layers.json of this run: keyed by its place in the run (and the trace's hash), so a moved or copied run directory is still done
            cfg_dict["layers"] = str(Path(layers).resolve().relative_to(self.run.root.resolve()))
        key_inputs = [model_key, data_key, extra_key]
        stage_key = json.dumps([cfg_dict, key_inputs], sort_keys=True, default=str)
        import hashlib

        ckpt = self.run.root / "checkpoints" / f"{name}-{hashlib.sha256(stage_key.encode()).hexdigest()[:12]}"

        def build(tmp: Path) -> dict:
            resume = latest_checkpoint(ckpt) is not None
            if resume:
                self.log(f"[{name}] resuming from {latest_checkpoint(ckpt)}")
            manifest = run_unlearning(model_path, data, tmp, config, model_options=self.config.loading, overwrite=True, resume=resume, checkpoint_dir=ckpt, progress=self.progress)
            validation = manifest.get("validation") or {}
            return {"layers": manifest["layers"], "kind": manifest["kind"], "method": manifest["method"], "steps": manifest["steps"], "stopped": manifest.get("stopped"),
                    "best_step": validation.get("best_step"), "wall_time_s": manifest["wall_time_s"]}

        return self.run.stage(name, cfg_dict, build, inputs=key_inputs)

    def selection_floor(self, references: dict[str, tuple[str, str]], data: str, data_key: str) -> float | None:
        """``unlearn.select_by: forgotten`` (MUSE's checkpoint rule) with no ``select_floor`` in a run
        that has a retain model: its forget knowledge on the validation rows (stage ``select_floor/``),
        the level every unlearning of the run must reach; None otherwise (the config's floor, or 0)."""
        cfg = self.config.unlearn
        retain = references.get("retain")
        if cfg.select_by != "forgotten" or cfg.select_floor is not None or retain is None:
            return None

        def build(tmp: Path) -> dict:
            from unlearn.eval.validation import score_validation, unlearning_validation_set

            vs = unlearning_validation_set(load_semeval(data), cfg)  # the rows every unlearning of the run validates on
            model, tok = load_model(retain[0], self.config.loading)
            scores = score_validation(model, tok, vs, batch_size=cfg.batch_size)
            free_model(model)
            write_json(tmp / "validation.json", {"model": retain[0], "rows": len(vs.rows), **scores})
            return {"forget_knowledge": scores.get("forget_knowledge")}

        key = {k: getattr(cfg, k) for k in ("eval_rows", "seed", "prompt_format", "validation_mia", "validation_mia_tokens", "batch_size")}
        floor = self.run.stage("select_floor", key, build, inputs=[retain[1], data_key]).record["forget_knowledge"]
        if floor is None:
            raise AmnesiaError("select_by forgotten: the retain model has no forget knowledge score on the validation rows (no forget questions); use select_by final")
        return float(floor)

    def unlearn_layers(self, trace: StageResult) -> tuple[str | list[int], str | None]:
        """What the run's unlearnings act on and the key it adds to theirs: the trace's ``layers.json``
        and the trace's hash with ``unlearn.layers: auto``, else the configured layers and nothing."""
        if self.config.traced_layers:
            return str(trace.path / "layers.json"), trace.hash
        return self.config.unlearn.layers, None

    def method_stages(self, model: str, model_key: str, data: str, data_key: str) -> tuple[StageResult, StageResult, StageResult | None]:
        """The method itself, whatever the benchmark: trace the target, unlearn (on the traced layers
        with ``unlearn.layers: auto``), re-trace the same facts on the unlearned model."""
        config = self.config
        trace = self.trace("trace", model, model_key, data, data_key)
        layers, extra_key = self.unlearn_layers(trace)
        unlearned = self.unlearn("unlearned", model, model_key, data, data_key, layers, extra_key=extra_key)
        retrace = (self.trace("retrace", str(unlearned.path), unlearned.hash, data, data_key, facts_from=trace.path / "trace.json", facts_key=trace.hash)
                   if config.retrace else None)
        return trace, unlearned, retrace

    def controls(self, trace: StageResult, unlearned: StageResult, model: str, model_key: str, data: str, data_key: str) -> dict:
        """The configured controls (other layers, or the baseline methods), each unlearned and scored."""
        config = self.config
        if config.control == "none":
            return {}
        n_layers = _read_json(trace.path / "trace.json")["summary"]["n_layers"]
        controls = {}
        for label, layer_set, method in control_runs(config, unlearned.record["layers"], n_layers):
            c_model = self.unlearn(f"control_{label}", model, model_key, data, data_key, layer_set, method=method)
            c_scores = self.evaluate(f"control_{label}_scores", str(c_model.path), c_model.hash, data, data_key)
            controls[label] = {"layers": layer_set, "method": method or config.unlearn.method, "model": c_model, "scores": c_scores}
        return controls

    def benchmark_stages(self, *, trace: StageResult, unlearned: StageResult, scores: dict[str, StageResult], model: str, model_key: str,
                         data: str, data_key: str) -> None:
        """A benchmark's own further stages after the controls (MUSE's C5/C6); their results are in ``self.run.results`` for the report."""

    def audit_task(self, data: str):
        """The benchmark's side of the audit (an :class:`unlearn.audit.AuditTask` on ``data``); ``None``: it has none."""
        return None

    def never_seen_model(self, models: dict[str, tuple[str, str]], data: str, data_key: str) -> dict[str, tuple[str, str]]:
        """``{"retain": (path, fingerprint)}``: the model the audit reads recovery against — the run's
        retain model (TOFU), else ``audit.retain_model``, else, when the run builds its target, the
        same recipe on the retain rows only (:meth:`retain_only_model`); ``{}`` when there is none."""
        if "retain" in models:
            return {"retain": models["retain"]}
        if self.config.audit.retain_model:
            return {"retain": (self.config.audit.retain_model, path_fingerprint(self.config.audit.retain_model))}
        if self.config.target is not None:
            return {"retain": self.retain_only_model(data, data_key, *models["target"])}
        return {}

    def audit(self, models: dict[str, tuple[str, str]], unlearned: StageResult, controls: dict, data: str, data_key: str) -> dict[str, StageResult]:
        """With ``audit.enabled``: stage ``audit`` (every attack on the unlearned model and, as references,
        on ``models``' others and the never-seen model (:meth:`never_seen_model`), whose attacked scores
        are the floor recovery is read above) and, with ``audit.controls``, one
        ``control_<label>_audit`` per control (the unlearned model's attacks only, the references
        read from ``audit``). Each writes audit.json, audit.md and its figures."""
        cfg = self.config.audit
        if not cfg.enabled:
            return {}
        models = {**models, **self.never_seen_model(models, data, data_key)}
        from pipelines.audit import write_audit
        from unlearn.audit import run_audit

        layers = unlearned.record["layers"]
        key = {"audit": dataclasses.asdict(cfg), "evaluate": dataclasses.asdict(self.config.evaluate) if dataclasses.is_dataclass(self.config.evaluate) else self.config.evaluate,
               "prompt_format": self.config.prompt_format}
        references = {label: path for label, (path, _) in models.items() if label != "unlearned"}

        def load(path):
            return load_model(path, self.config.loading)

        def build(model_path: str, config, known: dict | None):
            def run(tmp: Path) -> dict:
                audit = run_audit({"unlearned": model_path, **references}, self.audit_task(data), config, load=load, layers=layers, known=known,
                                  log=self.log if self.progress else (lambda m: None))  # a line per attack, unless quiet
                write_audit(tmp, audit)
                return {"worst_case": audit["worst_case"]}
            return run

        main = self.run.stage("audit", key, build(str(unlearned.path), cfg, None), inputs=[data_key, *(k for _, k in models.values())])
        audits = {"audit": main}
        if cfg.controls and controls:
            known = _read_json(main.path / "audit.json")
            lean = dataclasses.replace(cfg, references=False)
            for label, c in controls.items():
                name = f"control_{label}_audit"
                audits[name] = self.run.stage(name, key, build(str(c["model"].path), lean, known), inputs=[data_key, c["model"].hash, main.hash])
        return audits

    def evaluate(self, name: str, model_path: str, model_key: str, data: str, data_key: str) -> StageResult:
        """Score ``model_path`` with the benchmark's metrics in stage ``name`` (its ``scores.json``)."""
        raise NotImplementedError(f"{type(self).__name__}: a benchmark's pipeline defines evaluate()")

    # ------------------------------------------------------------------ the run
    inputs = None  #: what :meth:`read_inputs` returned (e.g. TOFU's loaded rows)

    @classmethod
    def read_inputs(cls, config):
        """Read and check the benchmark's own inputs before anything is written (default: nothing)."""
        return None

    @classmethod
    def sources(cls, config) -> list[tuple[str | None, str]]:
        """``(name, "model" | "data")`` of every configured model or data source: checked before anything is written."""
        return [(config.model, "model"), (config.data, "data")]

    def reference_models(self, data: str, data_key: str, model: str, model_key: str) -> dict[str, tuple[str, str]]:
        """``{label: (path, fingerprint)}`` of models scored beside the target and the unlearned one (TOFU's retain model)."""
        return {}

    def score_stage(self, label: str) -> str:
        """The stage folder of one model's scores (``label``: ``target``, ``unlearned`` or a reference model's)."""
        return f"scores_{label}"

    def report(self, run_dir: Path, *, trace: StageResult, retrace: StageResult | None, unlearned: StageResult,
               scores: dict[str, StageResult], controls: dict, wall_time: float) -> dict:
        """Write ``summary.json``, ``report.md`` and ``report.html``; return the summary."""
        raise NotImplementedError(f"{type(self).__name__}: a benchmark's pipeline defines report()")

    @classmethod
    def execute(cls, config, *, out: str | Path | None = None, force: bool = False, progress: bool = True, log: Callable[[str], None] = print) -> RunOutcome:
        """Run every stage of ``config`` in its run directory (``out``, default the config's); write the report."""
        run_dir = Path(out) if out is not None else config.run_dir()
        check_run_dir(run_dir, config)
        for name, what in cls.sources(config):
            check_source(name, what=what)
        if config.audit.enabled and cls.audit_task is Pipeline.audit_task:
            raise AmnesiaError(f"audit.enabled: benchmark {config.benchmark!r} has no audit (SemEval, TOFU and MUSE have one); set audit.enabled: false")
        if config.audit.enabled and config.audit.retain_model:
            check_source(config.audit.retain_model, what="model")
        started = time.time()
        inputs = cls.read_inputs(config)  # bad benchmark data fails before anything is written
        p = cls(config, run_dir, force=force, progress=progress, log=log)
        p.inputs = inputs
        write_text(run_dir / RESOLVED, dump_config(config))
        data, data_key = p.data_path()
        model, model_key = p.model_path(data, data_key)
        references = p.reference_models(data, data_key, model, model_key)
        p.floor = p.selection_floor(references, data, data_key)
        trace, unlearned, retrace = p.method_stages(model, model_key, data, data_key)
        models = {"target": (model, model_key), "unlearned": (str(unlearned.path), unlearned.hash), **references}
        scores = {label: p.evaluate(p.score_stage(label), path, key, data, data_key) for label, (path, key) in models.items()}
        controls = p.controls(trace, unlearned, model, model_key, data, data_key)
        p.benchmark_stages(trace=trace, unlearned=unlearned, scores=scores, model=model, model_key=model_key, data=data, data_key=data_key)
        p.audit(models, unlearned, controls, data, data_key)  # its stages are in p.run.results: the report reads them
        summary = p.report(run_dir, trace=trace, retrace=retrace, unlearned=unlearned, scores=scores, controls=controls, wall_time=time.time() - started)
        return RunOutcome(run_dir, summary, dict(p.run.results))


def control_layer_sets(config: RunSections, traced: list[int], n_layers: int) -> dict[str, list[int]]:
    """The layer sets of the requested control: random (same count), fixed (``control_layers``;
    unset: the layers the method's paper updates, scaled to depth, where it names them, else the
    first k), or every window of k (``methods`` keeps the traced layers and changes the method: see :func:`control_runs`)."""
    k = len(traced)
    if config.control in ("none", "methods"):
        return {}
    if config.control == "random":
        rng = random.Random(config.control_seed)
        choices = [l for l in range(n_layers)]
        picked = sorted(rng.sample(choices, k))
        return {f"random_{'-'.join(map(str, picked))}": picked}
    if config.control == "fixed":
        if config.control_layers:
            layers, label = sorted(config.control_layers), "fixed"
        elif (published := get_method(config.unlearn.method).published_layers(n_layers)) is not None:
            layers, label = sorted(published), "paper"
        else:
            layers, label = list(range(min(k, n_layers))), "fixed"
        if layers[-1] >= n_layers or layers[0] < 0:
            raise AmnesiaError(f"control_layers {layers}: out of range for a model with {n_layers} layers (0..{n_layers - 1})")
        return {f"{label}_{'-'.join(map(str, layers))}": layers}
    windows = {}
    for start in range(0, n_layers - k + 1):
        layers = list(range(start, start + k))
        windows[f"window_{start}-{start + k - 1}"] = layers
    return windows


def control_runs(config: RunSections, traced: list[int], n_layers: int) -> list[tuple[str, list[int], str | None]]:
    """``(label, layers, method)`` of every control unlearning: other layers with the configured
    method, or (``methods``) every other registered method (:mod:`unlearn.methods`: the built-in
    baselines and any plug-in; ``control_methods`` names a subset) on the same layers, budget,
    calibration and checkpoint selection as the default."""
    if config.control == "methods":
        names = config.control_methods or method_names()
        return [(m, list(traced), m) for m in names if m != config.unlearn.method]
    return [(label, layers, None) for label, layers in control_layer_sets(config, traced, n_layers).items()]


RESOLVED = "config.resolved.yaml"


def check_source(name: str | None, *, what: str = "model") -> None:
    """Fail before any stage (and before ``config.resolved.yaml`` is written) when a configured model
    or data (``what``) is neither a path that exists nor a Hub id that can be fetched (offline,
    unreachable, no such repository): one line, nothing written."""
    from unlearn.hub import check_hub_source
    from unlearn.models import is_local

    if not name:
        return
    if is_local(name):
        if not Path(name).expanduser().exists():
            raise AmnesiaError(f"{name}: {'model path' if what == 'model' else 'data folder'} does not exist")
    else:
        check_hub_source(name, repo_type="model" if what == "model" else "dataset", what=what)


def check_run_dir(run_dir: Path, config: RunSections) -> None:
    """Refuse a run directory inside the configured model's or data's folder, a file, or an existing
    folder that is not a run directory (it has no ``config.resolved.yaml``): a run writes and
    replaces stage folders there, and removes ``.tmp-*`` leftovers."""
    run_dir = Path(run_dir)
    for what, path in (("input model's", config.model), ("data", config.data)):
        if path and Path(path).expanduser().is_dir() and is_inside(run_dir, Path(path).expanduser()):
            raise AmnesiaError(f"--out {run_dir}: is inside the {what} folder {path}; write the run somewhere else")
    if run_dir.exists() and not run_dir.is_dir():
        raise AmnesiaError(f"--out {run_dir}: is a file; expected a run directory")
    check_creatable(run_dir)
    if run_dir.is_dir() and not (run_dir / RESOLVED).is_file() and any(not p.name.startswith(".tmp-") for p in run_dir.iterdir()):
        raise AmnesiaError(f"--out {run_dir}: exists and is not an amnesia run directory (it has no {RESOLVED}); choose another --out")


def run_pipeline(config, *, out: str | Path | None = None, force: bool = False, progress: bool = True, log: Callable[[str], None] = print) -> RunOutcome:
    """Run every stage of ``config`` in its run directory; write the report; return the summary.

    The config's ``benchmark`` (:mod:`pipelines.benchmarks`: ``semeval``, ``tofu`` or a registered
    one) says how: its :meth:`Pipeline.execute`."""
    return get_benchmark(getattr(config, "benchmark", "semeval")).run(config, out=out, force=force, progress=progress, log=log)
