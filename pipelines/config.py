"""The run configuration of ``amnesia run``: one YAML file → one typed run config.

The sections every benchmark shares live here (:class:`RunSections`; every key optional, defaults
in the dataclasses below and in each stage's config); a benchmark's own config subclasses it
(SemEval's :class:`pipelines.semeval.config.SemEvalRunConfig`, TOFU's
:class:`pipelines.tofu.pipeline.TofuRunConfig`) and ``benchmark:`` picks it
(:mod:`pipelines.benchmarks`):

* top level: ``name``, ``out`` (run directory; default ``runs/NAME``), ``benchmark`` (``semeval``,
  the default, ``tofu``, or a registered one), ``data``, ``model`` (the target: folder or Hub id),
  ``prompt_format`` (``raw`` or ``chat``: the one prompt format every stage reads — target
  training, tracing, unlearning, evaluation; set only here), ``retrace``, ``control``,
  ``control_layers``, ``control_seed``, ``control_methods`` (with ``control: methods``, which
  methods beside the configured one; default every registered method);
* ``target`` (:class:`TargetConfig`): train the tiny target instead of ``model``;
* ``loading`` (:class:`unlearn.config.ModelOptions`): device, dtype, allow_pickle, trust_remote_code;
* ``trace`` (:class:`TraceSection`): the tracing stage, flat (``trace.samples``, ``trace.select_k``…);
* ``unlearn`` (:class:`unlearn.config.UnlearnConfig`): ``layers: auto`` = the traced selection;
* ``evaluate``: the benchmark's evaluation settings;
* ``audit`` (:class:`unlearn.audit.AuditConfig`): ``enabled: true`` adds the audit stage (quantization,
  relearning, logit lens on the unlearned model and its references; docs/audit.md).

An unknown key, a wrong type or an out-of-range value is an :class:`AmnesiaError` naming the
file and the dotted key (and, for unknown keys, the valid ones). Command-line overrides are
dotted ``key=value`` pairs applied to the YAML before validation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pipelines.benchmarks import get_benchmark
from pipelines.typed import apply_overrides, from_mapping, to_mapping
from tracing.config import SelectionConfig, TraceConfig
from tracing.errors import AmnesiaError
from tracing.settings import load_yaml_text, setting
from unlearn.audit.config import AuditConfig
from unlearn.config import ModelOptions, UnlearnConfig
from unlearn.methods import get_method
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

    layers: int = setting(6, help="transformer layers of the fresh model")
    hidden: int = setting(128, help="hidden size of the fresh model")
    heads: int = setting(4, help="attention heads of the fresh model")
    intermediate: int = setting(512, help="MLP width of the fresh model")
    vocab_size: int = setting(1024, help="size of the trained BPE vocabulary")
    max_length: int = setting(128, help="tokens per training row (longer rows are cut); a fresh model has at least 256 positions")
    steps: int = setting(1500, help="maximum optimizer steps")
    batch_size: int = setting(32, help="rows per step")
    lr: float | None = setting(None, help=f"AdamW learning rate; default {SCRATCH_LR:g} for a fresh model, {FINETUNE_LR:g} with --base-model (full fine-tuning of a pretrained model)")
    warmup: int = setting(20, help="linear warm-up steps of the learning rate")
    eval_every: int = setting(50, help="measure QA exact match every N steps (and stop once it reaches --target-em)")
    target_em: float = setting(0.95, help="stop when greedy exact match on the QA rows reaches this")
    seed: int = setting(0, help="random seed (initialisation and batch order)")
    tokenizer: str | None = setting(None, help="use this tokenizer (folder or Hub id) instead of training one")
    base_model: str | None = setting(None, help="fine-tune this HF causal LM instead of building a fresh OLMo")
    prompt_format: str = setting("raw", cli=False, help="raw or chat: how the QA prompts are rendered (a run's top-level prompt_format)")
    train_on: Literal["all", "retain"] = setting("all", help=(
        "all = every forget and retain row (the target); retain = the retain rows only (the retain model an unlearned model is compared with; "
        "pass --tokenizer TARGET so the two share a tokenizer)"))

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

    split: Literal["forget", "retain", "all"] = setting("forget", group="facts", help="which set's QA rows become facts")
    part: Literal["train", "validation"] = setting("train", group="facts", help="which part of the set")
    tasks: tuple[str, ...] = setting(("Task2",), group="facts", help="comma-separated task names whose QA rows are used")
    rephrase: bool = setting(False, group="facts", help="ask the paper's rephrasing \"What is SUBJECT's RELATION?\" instead of the row's question")
    max_facts: int | None = setting(None, group="facts", help="trace at most this many kept facts (the first in data order); default all")
    prompt_format: str = setting("raw", cli=False, help="raw or chat: how the facts' prompts are rendered (a run's top-level prompt_format)")

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
    heatmaps: int = setting(4, help="write heatmaps for this many facts")

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


#: Where each flat ``trace.*`` key of a run config comes from: (config class, key prefix, fields left out).
TRACE_SOURCES = ((TraceConfig, "", ()), (FactSource, "", ("prompt_format",)), (SelectionConfig, "select_", ()),
                 (TraceStageConfig, "", ("trace", "select", "facts")))
#: Where a run's default differs from ``amnesia trace``'s: the attribution screen with exact tracing where selection reads.
RUN_TRACE_DEFAULTS = {"method": "auto"}


def _trace_section_fields() -> list[tuple[str, Any, Any]]:
    """The fields of :class:`TraceSection`: every field of :data:`TRACE_SOURCES`, with its help,
    type (choices become a ``Literal``) and default — declared once, in those classes."""
    import typing

    out = []
    for cls, prefix, skip in TRACE_SOURCES:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in skip:
                continue
            name = prefix + f.name
            hint = hints[f.name]
            choices = f.metadata.get("argparse", {}).get("choices")
            if choices:
                hint = Literal[tuple(choices)]
            default = RUN_TRACE_DEFAULTS.get(name, f.default if f.default is not dataclasses.MISSING else f.default_factory())
            out.append((name, hint, field(default=default, metadata=f.metadata)))
    return out


def _stage_config(self, prompt_format: str = "raw") -> TraceStageConfig:
    """The tracing stage's config from the flat section (``prompt_format``: the run's)."""
    parts = {}
    for cls, prefix, skip in TRACE_SOURCES:
        parts[cls] = {f.name: getattr(self, prefix + f.name) for f in dataclasses.fields(cls) if f.name not in skip}
    stage = parts[TraceStageConfig]
    return TraceStageConfig(trace=TraceConfig(**parts[TraceConfig]), select=SelectionConfig(**parts[SelectionConfig]),
                            facts=FactSource(**parts[FactSource], prompt_format=prompt_format), **stage)


def _check_section(self) -> None:
    self.stage_config().check()


#: The tracing stage's options, flat as users write them in a run config (``trace.samples=5``,
#: ``trace.select_k=4``): every field of ``TraceConfig``, ``FactSource`` (its ``prompt_format`` is the
#: run's), ``SelectionConfig`` (prefixed ``select_``) and ``TraceStageConfig.heatmaps``, with their
#: defaults but ``method: auto`` (:data:`RUN_TRACE_DEFAULTS`). Generated: a new tracing setting is one field there.
TraceSection = dataclasses.make_dataclass("TraceSection", _trace_section_fields(), frozen=True,
                                          namespace={"stage_config": _stage_config, "check": _check_section, "__module__": __name__})


#: The sections whose prompt_format is the config's top-level one (set there once, copied in by the loader).
PROMPT_FORMAT_SECTIONS = ("unlearn", "evaluate", "trace", "target")


@dataclass(frozen=True)
class RunSections:
    """The sections every benchmark's run config has, and what a run does with them.

    A benchmark's config (:class:`pipelines.semeval.config.SemEvalRunConfig`,
    :class:`pipelines.tofu.pipeline.TofuRunConfig`, a plug-in's) subclasses it: it re-declares
    ``name``, ``benchmark``, ``data`` and ``evaluate`` with its own defaults and types, adds its
    own sections and calls ``super().check()`` from its ``check()``."""

    #: Per section, the keys the loader copies into it from elsewhere in the config (the top-level
    #: ``prompt_format``): :meth:`to_dict` (``config.resolved.yaml``) leaves the copies out, so the
    #: file loads again; a benchmark that copies more extends it.
    COPIED: ClassVar[dict[str, tuple[str, ...]]] = {s: ("prompt_format",) for s in PROMPT_FORMAT_SECTIONS}

    name: str = "run"
    out: str | None = None
    benchmark: str = "semeval"
    data: str | None = None
    model: str | None = None
    target: TargetConfig | None = None
    loading: ModelOptions = field(default_factory=ModelOptions)
    trace: TraceSection = field(default_factory=TraceSection)
    unlearn: UnlearnConfig = field(default_factory=lambda: UnlearnConfig(layers="auto"))
    evaluate: Any = None
    prompt_format: Literal["raw", "chat"] = "raw"
    retrace: bool = True
    control: Literal["none", "random", "fixed", "sweep", "methods"] = "none"
    control_layers: list[int] | None = None
    control_seed: int = 0
    control_methods: list[str] | None = None
    audit: AuditConfig = field(default_factory=AuditConfig)

    def check(self) -> None:
        if self.control == "fixed" and self.control_layers is not None and not self.control_layers:
            raise AmnesiaError("control_layers: expected a non-empty list of layer indices (or leave it out: the method's published layers, else the first select_k)")
        if self.control_methods is not None:
            if not self.control_methods:
                raise AmnesiaError("control_methods: expected a non-empty list of method names (or leave it out: every registered method)")
            for name in self.control_methods:
                try:
                    get_method(name)
                except AmnesiaError as exc:
                    raise AmnesiaError(f"control_methods: {exc}") from None
        self.check_name()

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
        """The config as plain data, a benchmark's own sections right after ``data`` (``world``, ``tofu``, …)."""
        data = to_mapping(self)
        for section, keys in self.COPIED.items():
            if isinstance(data.get(section), dict):
                data[section] = {k: v for k, v in data[section].items() if k not in keys}
        shared = [f.name for f in dataclasses.fields(RunSections)]
        head = shared[: shared.index("data") + 1]
        order = head + [k for k in data if k not in shared] + shared[len(head):]
        return {k: data[k] for k in order}


def _unlearn_checked(section) -> UnlearnConfig:
    """``unlearn`` with ``layers: auto`` allowed (resolved to the trace's layers.json at run time)."""
    raw = dict(section or {})
    auto = raw.get("layers", "auto") == "auto"
    if auto:
        raw["layers"] = "0"
    config = from_mapping(UnlearnConfig, raw, "unlearn")
    return dataclasses.replace(config, layers="auto") if auto else config


def config_from_mapping(data: dict, where: str, cls: type):
    """Validate a mapping (a parsed YAML file with overrides applied) into ``cls``, a benchmark's
    run config (a :class:`RunSections` subclass): ``unlearn.layers: auto`` allowed, the top-level
    ``prompt_format`` set in every section that has one, the config's ``check()`` run; errors name ``where``."""
    if not isinstance(data, dict):
        raise AmnesiaError(f"{where}: expected a mapping of sections (name, data, model, world, target, trace, unlearn, evaluate, …)")
    data = dict(data)
    unlearn_section = data.pop("unlearn", None)
    if unlearn_section is not None and not isinstance(unlearn_section, dict):
        raise AmnesiaError(f"{where}: unlearn: expected a mapping, got {unlearn_section!r}")
    for section in PROMPT_FORMAT_SECTIONS:
        raw = unlearn_section if section == "unlearn" else data.get(section)
        if isinstance(raw, dict) and "prompt_format" in raw:
            raise AmnesiaError(f"{where}: {section}.prompt_format: set prompt_format at the top level of the config (one format for every stage)")
    try:
        unlearn = _unlearn_checked(unlearn_section)
        config = from_mapping(cls, data)
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


def load_config(path: str | Path, overrides: list[str] = ()) -> RunSections:
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


def dump_config(config: RunSections) -> str:
    """The resolved config as YAML (what ``config.resolved.yaml`` holds)."""
    import yaml

    return yaml.safe_dump(config.to_dict(), sort_keys=False)
