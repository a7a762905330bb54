"""The run configuration of ``amnesia run``: one YAML file → one typed :class:`RunConfig`.

Sections (every key optional; defaults in the dataclasses below and in each stage's config):

* top level: ``name``, ``out`` (run directory; default ``runs/NAME``), ``benchmark`` (``semeval``,
  the default, ``tofu``, or a registered one: :mod:`pipelines.benchmarks` — its own config class reads the file), ``data`` (SemEval data:
  folder or Hub id), ``model`` (the target: folder or Hub id), ``prompt_format`` (``raw`` or
  ``chat``: the one prompt format every stage reads — target training, tracing, unlearning,
  evaluation; set only here), ``retrace``, ``control``, ``control_layers``, ``control_seed``;
* ``world`` (:class:`pipelines.world.WorldConfig`): build the synthetic world instead of ``data``;
* ``target`` (:class:`pipelines.target.TargetConfig`): train the tiny target instead of ``model``;
* ``loading`` (:class:`unlearn.models.ModelOptions`): device, dtype, allow_pickle, trust_remote_code;
* ``trace`` (:class:`TraceSection`): the tracing stage, flat (``trace.samples``, ``trace.select_k``…);
* ``unlearn`` (:class:`unlearn.trainer.UnlearnConfig`): ``layers: auto`` = the traced selection;
* ``evaluate`` (:class:`unlearn.eval.EvalConfig`).

An unknown key, a wrong type or an out-of-range value is an :class:`AmnesiaError` naming the
file and the dotted key (and, for unknown keys, the valid ones). Command-line overrides are
dotted ``key=value`` pairs applied to the YAML before validation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipelines.benchmarks import get_benchmark
from pipelines.typed import apply_overrides, from_mapping, to_mapping
from pipelines.world import WorldConfig
from tracing.config import SelectionConfig, TraceConfig
from tracing.errors import AmnesiaError
from tracing.settings import load_yaml_text
from unlearn.config import ModelOptions, UnlearnConfig
from unlearn.eval.config import EvalConfig
from unlearn.prompts import PROMPT_FORMATS

# ---------------------------------------------------------------- the target (pipelines.target)

SCRATCH_LR = 3e-3  # a 6-layer model from scratch memorizes 40 people in ~150 steps
FINETUNE_LR = 5e-5  # full fine-tuning of a pretrained model (a from-scratch rate would wreck it)


@dataclass(frozen=True)
class TargetConfig:
    """Architecture and training of the tiny target (defaults: 6 layers × 128 wide).

    ``train_on``: ``all`` = every forget and retain row (the target); ``retain`` = the retain rows
    only — the *retain model*, the gold standard an unlearned model is compared with (TOFU's forget
    quality); build it with the target's tokenizer (``tokenizer``) so their losses compare.
    """

    layers: int = 6
    hidden: int = 128
    heads: int = 4
    intermediate: int = 512
    vocab_size: int = 1024
    max_length: int = 128
    steps: int = 1500
    batch_size: int = 32
    lr: float | None = None
    warmup: int = 20
    eval_every: int = 50
    target_em: float = 0.95
    seed: int = 0
    tokenizer: str | None = None
    base_model: str | None = None
    prompt_format: str = "raw"
    train_on: Literal["all", "retain"] = "all"

    def check(self) -> None:
        for name in ("layers", "hidden", "heads", "intermediate", "vocab_size", "max_length", "steps", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise AmnesiaError(f"{name} {getattr(self, name)}: expected a positive integer")
        if self.hidden % self.heads:
            raise AmnesiaError(f"hidden {self.hidden} is not divisible by heads {self.heads}")
        if self.lr is not None and not self.lr > 0:
            raise AmnesiaError(f"lr {self.lr}: expected a positive number")
        if not 0 < self.target_em <= 1:
            raise AmnesiaError(f"target_em {self.target_em}: expected a number in (0, 1]")
        if self.prompt_format not in PROMPT_FORMATS:
            raise AmnesiaError(f"prompt_format {self.prompt_format!r}: expected one of {', '.join(PROMPT_FORMATS)}")
        if self.train_on not in ("all", "retain"):
            raise AmnesiaError(f"train_on {self.train_on!r}: expected all (the target) or retain (the retain model: the target without the forget rows)")

    @property
    def learning_rate(self) -> float:
        """``lr``, or the default for what is trained: 3e-3 from scratch, 5e-5 when fine-tuning ``base_model``."""
        if self.lr is not None:
            return self.lr
        return FINETUNE_LR if self.base_model else SCRATCH_LR


# ---------------------------------------------------------------- the tracing stage (pipelines.trace_stage)

SPLITS = ("forget", "retain", "all")
PARTS = ("train", "validation")


@dataclass(frozen=True)
class FactSource:
    """Which rows become facts. Default: forget-set train rows, Task 2, as asked."""

    split: Literal["forget", "retain", "all"] = "forget"
    part: Literal["train", "validation"] = "train"
    tasks: tuple[str, ...] = ("Task2",)
    rephrase: bool = False
    max_facts: int | None = None
    prompt_format: str = "raw"

    def check(self) -> "FactSource":
        if self.split not in SPLITS:
            raise AmnesiaError(f"split {self.split!r}: expected one of {', '.join(SPLITS)}")
        if self.part not in PARTS:
            raise AmnesiaError(f"part {self.part!r}: expected one of {', '.join(PARTS)}")
        if self.max_facts is not None and self.max_facts < 1:
            raise AmnesiaError(f"max_facts {self.max_facts}: expected a positive integer (or no cap)")
        if self.prompt_format not in PROMPT_FORMATS:
            raise AmnesiaError(f"prompt_format {self.prompt_format!r}: expected one of {', '.join(PROMPT_FORMATS)}")
        return self


@dataclass(frozen=True)
class TraceStageConfig:
    """Everything the tracing stage needs besides the model and the data."""

    trace: TraceConfig = field(default_factory=TraceConfig)
    select: SelectionConfig = field(default_factory=SelectionConfig)
    facts: FactSource = field(default_factory=FactSource)
    heatmaps: int = 4

    def __post_init__(self):
        missing = tuple(g for g in self.select.groups if g not in self.trace.confirm)
        if missing:  # method auto traces exactly what selection reads
            object.__setattr__(self, "trace", dataclasses.replace(self.trace, confirm=(*self.trace.confirm, *missing)))

    def check(self) -> "TraceStageConfig":
        self.trace.check()
        self.select.check()
        self.facts.check()
        if self.heatmaps < 0:
            raise AmnesiaError(f"heatmaps {self.heatmaps}: expected a number >= 0")
        if self.select.kind not in self.trace.kinds:
            raise AmnesiaError(f"selection kind {self.select.kind!r} is not among the traced kinds {','.join(self.trace.kinds)}")
        return self


# ---------------------------------------------------------------- the run

CONTROLS = ("none", "random", "fixed", "sweep", "methods")


@dataclass(frozen=True)
class TraceSection:
    """The tracing stage's options, flat as users write them (``trace.select_k=4``)."""

    kinds: list[str] = field(default_factory=lambda: ["hidden", "mlp", "attn"])
    samples: int = 10
    noise: str | float = "s3"
    window: int = 10
    method: Literal["exact", "attribution", "auto"] = "auto"
    batch_size: int | None = None
    seed: int = 0
    split: Literal["forget", "retain", "all"] = "forget"
    part: Literal["train", "validation"] = "train"
    rephrase: bool = False
    max_facts: int | None = None
    select_mode: Literal["window", "threshold"] = "window"
    select_k: int | None = None
    select_fraction: float = 0.5
    select_kind: Literal["mlp", "attn", "hidden"] = "mlp"
    select_group: str = "auto"
    select_depth_fraction: float = 0.375
    select_evidence: bool = True
    heatmaps: int = 4

    def stage_config(self, prompt_format: str = "raw") -> TraceStageConfig:
        return TraceStageConfig(
            trace=TraceConfig(kinds=tuple(self.kinds), samples=self.samples, noise=self.noise, window=self.window, seed=self.seed, method=self.method, batch_size=self.batch_size),
            select=SelectionConfig(mode=self.select_mode, k=self.select_k, fraction=self.select_fraction, kind=self.select_kind, group=self.select_group,
                                   depth_fraction=self.select_depth_fraction, evidence=self.select_evidence),
            facts=FactSource(split=self.split, part=self.part, rephrase=self.rephrase, max_facts=self.max_facts, prompt_format=prompt_format),
            heatmaps=self.heatmaps,
        )

    def check(self) -> None:
        self.stage_config().check()


class RunMethods:
    """What every run config (:class:`RunConfig`, :class:`pipelines.tofu.TofuRunConfig`) does with
    its ``name``, ``out``, ``unlearn`` sections."""

    def check_name(self) -> None:
        """``name`` becomes a folder (``runs/NAME``): one path component a file system accepts."""
        name = self.name
        if not isinstance(name, str) or not name.strip() or any(c in name for c in "/\\\0") or name in (".", ".."):
            raise AmnesiaError(f"name {name!r}: expected a non-empty folder name without '/', '\\' and other than '.' or '..'")
        if len(name.encode("utf-8")) > 200:
            raise AmnesiaError(f"name {name[:40]!r}…: {len(name.encode('utf-8'))} bytes, too long for a folder name (expected at most 200)")

    @property
    def traced_layers(self) -> bool:
        """True when unlearning uses the tracing stage's selection (``unlearn.layers: auto``)."""
        return self.unlearn.layers == "auto"

    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / self.name

    def to_dict(self) -> dict:
        return to_mapping(self)


@dataclass(frozen=True)
class RunConfig(RunMethods):
    """Everything ``amnesia run`` does, validated."""

    name: str = "run"
    out: str | None = None
    benchmark: Literal["semeval"] = "semeval"
    data: str | None = None
    model: str | None = None
    world: WorldConfig | None = None
    target: TargetConfig | None = None
    loading: ModelOptions = field(default_factory=ModelOptions)
    trace: TraceSection = field(default_factory=TraceSection)
    unlearn: UnlearnConfig = field(default_factory=lambda: UnlearnConfig(layers="auto"))
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    prompt_format: Literal["raw", "chat"] = "raw"
    retrace: bool = True
    control: Literal["none", "random", "fixed", "sweep", "methods"] = "none"
    control_layers: list[int] | None = None
    control_seed: int = 0

    def check(self) -> None:
        if (self.data is None) == (self.world is None):
            raise AmnesiaError("give exactly one of 'data' (a SemEval data folder or Hub id) and 'world' (build the synthetic world)")
        if (self.model is None) == (self.target is None):
            raise AmnesiaError("give exactly one of 'model' (the target model folder or Hub id) and 'target' (train the tiny target)")
        if self.target is not None and self.target.base_model is None and self.world is None and self.data is None:
            raise AmnesiaError("'target' needs data to train on")
        if self.control == "fixed" and self.control_layers is not None and not self.control_layers:
            raise AmnesiaError("control_layers: expected a non-empty list of layer indices (or leave it out: the first select_k layers)")
        self.check_name()


def _unlearn_checked(section) -> UnlearnConfig:
    """``unlearn`` with ``layers: auto`` allowed (resolved to the trace's layers.json at run time)."""
    raw = dict(section or {})
    auto = raw.get("layers", "auto") == "auto"
    if auto:
        raw["layers"] = "0"
    config = from_mapping(UnlearnConfig, raw, "unlearn")
    return dataclasses.replace(config, layers="auto") if auto else config


def config_from_mapping(data: dict, where: str = "config", cls: type | None = None):
    """Validate a mapping (a parsed YAML file with overrides applied) into a :class:`RunConfig`
    (or ``cls``, another benchmark's run config: a frozen dataclass with ``unlearn`` and
    ``prompt_format`` fields and a ``check()``, as :class:`pipelines.tofu.TofuRunConfig`)."""
    if not isinstance(data, dict):
        raise AmnesiaError(f"{where}: expected a mapping of sections (name, data, model, world, target, trace, unlearn, evaluate, …)")
    data = dict(data)
    unlearn_section = data.pop("unlearn", None)
    if unlearn_section is not None and not isinstance(unlearn_section, dict):
        raise AmnesiaError(f"{where}: unlearn: expected a mapping, got {unlearn_section!r}")
    for section in ("unlearn", "evaluate", "trace", "target"):
        raw = unlearn_section if section == "unlearn" else data.get(section)
        if isinstance(raw, dict) and "prompt_format" in raw:
            raise AmnesiaError(f"{where}: {section}.prompt_format: set prompt_format at the top level of the config (one format for every stage)")
    try:
        unlearn = _unlearn_checked(unlearn_section)
        config = from_mapping(cls or RunConfig, data)
    except AmnesiaError as exc:
        raise AmnesiaError(f"{where}: {exc}") from None
    fmt = config.prompt_format
    sections = {"unlearn": dataclasses.replace(unlearn, prompt_format=fmt)}
    for name in ("evaluate", "target"):  # the sections that have a prompt format, where the config has them
        section = getattr(config, name, None)
        if section is not None and hasattr(section, "prompt_format"):
            sections[name] = dataclasses.replace(section, prompt_format=fmt)
    config = dataclasses.replace(config, **sections)
    try:
        config.check()
    except AmnesiaError as exc:
        raise AmnesiaError(f"{where}: {exc}") from None
    return config


def load_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML config (safe loader), apply dotted ``key=value`` overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise AmnesiaError(f"{path}: config file does not exist")
    data = load_yaml_text(path.read_text(encoding="utf-8"), str(path)) or {}
    if not isinstance(data, dict):
        raise AmnesiaError(f"{path}: expected a mapping of sections at the top level")
    data = apply_overrides(data, list(overrides))
    try:
        benchmark = get_benchmark(data.get("benchmark", "semeval"))
    except AmnesiaError as exc:
        raise AmnesiaError(f"{path}: {exc}") from None
    return benchmark.config_from_mapping(data, str(path))


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML (what ``config.resolved.yaml`` holds)."""
    import yaml

    return yaml.safe_dump(config.to_dict(), sort_keys=False)
