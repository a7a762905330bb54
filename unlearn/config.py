"""The unlearning stage's settings, importable without torch (the CLI builds its ``--help`` from them).

:class:`UnlearnConfig` (every hyperparameter; a method's own settings are its module's
``Settings``, :mod:`unlearn.methods`) and :class:`ModelOptions` (how a model is loaded).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from tracing.errors import AmnesiaError

from .methods import get_method
from .methods.sha256 import AlphaParams  # noqa: F401 - the sha256 settings UnlearnConfig's alpha_* fields build

# Config fields that may change between an interrupted run and its resume.
RESUME_FREE = ("logging_steps", "save_steps", "save_total_limit", "report_to", "keep_checkpoints")


@dataclass
class UnlearnConfig:
    """Every hyperparameter of the unlearning stage.

    The batch defaults are the paper's for OLMo-1B/7B: MLPs of layers 0-5, per-device batch 12 ×
    accumulation 10 (``bf16`` is off here so the defaults also run on CPU; turn it on for GPUs).
    The forget term is ours, calibrated to never-seen text (:mod:`unlearn.calibration`):
    ``forget_target="auto"``, ``forget_mode="pull"``, ``forget_tokens="all"``,
    ``forget_eos=False``, re-measured every step, with a constant learning rate (the target is
    the brake). The step size and the budget are measured, not given: ``lr="auto"`` probes the
    model on the validation rows for the rate that brings the forget rows to the level in
    ``reach_epochs`` epochs, ``epochs="auto"`` trains ``budget_factor`` times that
    (:mod:`unlearn.step_size`). ``unlearn.semeval.paper_config`` is the paper's recipe unchanged
    (lr 1.5e-5, 8 epochs, ``forget_target="none"``, answers only, EOS included, linear decay).
    """

    method: str = "sha256"
    layers: str | list[int] = "0-5"
    kind: Literal["auto", "mlp", "attn", "all"] = "auto"
    epochs: float | str = "auto"
    max_steps: int = -1
    lr: float | str = "auto"
    reach_epochs: float = 3.0
    budget_factor: float = 3.0
    probe_steps: int = 3
    hold_factor: float = 0.3
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    batch_size: int = 12
    grad_accum: int = 10
    max_length: int = 512
    schedule: Literal["joint", "sequential"] = "joint"
    chunk_size: int = 32
    retain_ratio: int = 1
    group_by_length: bool = False
    prompt_format: Literal["raw", "chat"] = "raw"
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool = False
    max_grad_norm: float = 1.0
    seed: int = 42
    # sha256: α = clip(a·b^(CE_r − L_ref) + c, alpha_min, alpha_max) when CE_r > L_ref
    alpha_variant: Literal["paper", "code"] = "paper"
    alpha_a: float = 0.3
    alpha_b: float = 6.0
    alpha_c: float = 0.8
    alpha_min: float = 1.2
    alpha_max: float | None = None
    npo_beta: float = 0.1
    method_args: dict = field(default_factory=dict)
    forget_target: str | float = "auto"
    forget_reference: str | None = None
    forget_quantile: float = 0.5
    forget_spread: bool = True
    forget_mode: Literal["pull", "stop"] = "pull"
    forget_update_steps: int = 1
    forget_tokens: Literal["all", "documents", "output"] = "all"
    forget_eos: bool = False
    splits: list[str] = field(default_factory=lambda: ["train", "validation"])
    eval_steps: int = 0
    eval_rows: int = 64
    select_by: Literal["final", "mia", "task"] = "final"
    patience: int = 0
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    logging_steps: int = 10
    save_steps: int = 0
    save_total_limit: int = 2
    keep_checkpoints: bool = False
    report_to: list[str] = field(default_factory=lambda: ["none"])

    def __post_init__(self):
        # "1e-3" from a command line or a YAML 1.1 reader is a number, not a string
        for name in ("lr", "epochs"):
            value = getattr(self, name)
            if isinstance(value, str) and value != "auto":
                try:
                    setattr(self, name, float(value))
                except ValueError:
                    pass  # check() names it

    def check(self) -> None:
        """Raise :class:`AmnesiaError` for an impossible value (named like the CLI option)."""
        method = get_method(self.method)  # one line naming the nearest method on a typo
        if not isinstance(self.method_args, dict):
            raise AmnesiaError(f"method_args {self.method_args!r}: expected a mapping of the method's settings")
        method.settings_from(self)  # the method's own settings, checked now
        if self.kind not in ("auto", "mlp", "attn", "all"):
            raise AmnesiaError(f"kind {self.kind!r}: expected one of auto, mlp, attn, all")
        if self.prompt_format not in ("raw", "chat"):
            raise AmnesiaError(f"prompt_format {self.prompt_format!r}: expected raw or chat")
        if self.schedule not in ("joint", "sequential"):
            raise AmnesiaError(f"schedule {self.schedule!r}: expected joint or sequential")
        for name, what in (("lr", "learning rate"), ("epochs", "number of passes over the forget set")):
            value = getattr(self, name)
            if value != "auto" and not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
                raise AmnesiaError(f"{name} {value!r}: expected auto or a positive, finite {what}")
        for name in ("reach_epochs", "budget_factor"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise AmnesiaError(f"{name} {value!r}: expected a positive number")
        if not (isinstance(self.hold_factor, (int, float)) and 0 < self.hold_factor <= 1):
            raise AmnesiaError(f"hold_factor {self.hold_factor!r}: expected a number in (0, 1] (1 = the same rate after the forget rows arrive)")
        if not isinstance(self.probe_steps, int) or isinstance(self.probe_steps, bool) or self.probe_steps < 1:
            raise AmnesiaError(f"probe_steps {self.probe_steps!r}: expected a positive integer")
        if self.schedule == "sequential" and self.epochs == "auto":
            raise AmnesiaError("epochs auto: the sequential schedule needs a whole number of passes per chunk (set epochs)")
        if self.schedule == "sequential" and (self.epochs != int(self.epochs) or self.epochs < 1):
            raise AmnesiaError(f"epochs {self.epochs}: the sequential schedule needs a whole number of passes per chunk")
        if self.alpha_variant not in ("paper", "code"):
            raise AmnesiaError(f"alpha_variant {self.alpha_variant!r}: expected paper or code")
        if self.group_by_length and self.schedule != "joint":
            raise AmnesiaError(f"group_by_length: works with the joint schedule only, not {self.schedule!r}")
        positive = {
            "batch_size": self.batch_size,
            "grad_accum": self.grad_accum,
            "max_length": self.max_length,
            "logging_steps": self.logging_steps,
            "lora_r": self.lora_r,
            "chunk_size": self.chunk_size,
            "retain_ratio": self.retain_ratio,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise AmnesiaError(f"{name} {value!r}: expected a positive integer")
        if self.save_steps < 0 or self.save_total_limit < 1:
            raise AmnesiaError(f"save_steps {self.save_steps} / save_total_limit {self.save_total_limit}: expected save_steps >= 0 and save_total_limit >= 1")
        if self.bf16 and self.fp16:
            raise AmnesiaError("bf16 and fp16 are both on: pick one")
        if self.max_grad_norm < 0:
            raise AmnesiaError(f"max_grad_norm {self.max_grad_norm}: expected >= 0 (0 turns clipping off)")
        if not self.npo_beta > 0:
            raise AmnesiaError(f"npo_beta {self.npo_beta}: expected a positive number")
        target = self.forget_target
        if isinstance(target, str) and target not in ("auto", "none"):
            try:
                target = float(target)
            except ValueError:
                raise AmnesiaError(f"forget_target {self.forget_target!r}: expected auto, none or a positive per-token NLL") from None
        if not isinstance(target, str) and not (isinstance(target, (int, float)) and target > 0):
            raise AmnesiaError(f"forget_target {self.forget_target!r}: expected auto, none or a positive per-token NLL")
        if self.forget_mode not in ("stop", "pull"):
            raise AmnesiaError(f"forget_mode {self.forget_mode!r}: expected stop or pull")
        if self.forget_tokens not in ("all", "documents", "output"):
            raise AmnesiaError(f"forget_tokens {self.forget_tokens!r}: expected all, documents or output")
        if not isinstance(self.forget_update_steps, int) or self.forget_update_steps < 0:
            raise AmnesiaError(f"forget_update_steps {self.forget_update_steps!r}: expected an integer >= 0 (0 = measure the level once)")
        if not self.splits or any(p not in ("train", "validation") for p in self.splits):
            raise AmnesiaError(f"splits {self.splits!r}: expected a non-empty list of train, validation")
        if not isinstance(self.eval_steps, int) or self.eval_steps < 0:
            raise AmnesiaError(f"eval_steps {self.eval_steps!r}: expected an integer >= 0 (0 = no validation during training)")
        if not isinstance(self.eval_rows, int) or self.eval_rows < 1:
            raise AmnesiaError(f"eval_rows {self.eval_rows!r}: expected a positive number of validation rows per split")
        if self.select_by not in ("final", "mia", "task"):
            raise AmnesiaError(f"select_by {self.select_by!r}: expected final, mia or task")
        if not isinstance(self.patience, int) or self.patience < 0:
            raise AmnesiaError(f"patience {self.patience!r}: expected an integer >= 0 (0 = never stop early)")
        if not 0 < self.forget_quantile < 1:
            raise AmnesiaError(f"forget_quantile {self.forget_quantile}: expected a number in (0, 1)")
        if not 0 <= self.lora_dropout < 1:
            raise AmnesiaError(f"lora_dropout {self.lora_dropout}: expected a number in [0, 1)")
        p = self.alpha_params()
        if not 0 < p.alpha_min <= p.alpha_max:
            raise AmnesiaError(f"alpha_min {p.alpha_min} / alpha_max {p.alpha_max}: expected 0 < alpha_min <= alpha_max")
        if not self.alpha_b > 0:
            raise AmnesiaError(f"alpha_b {self.alpha_b}: expected a positive base")
        from .params import check_layer_spec

        check_layer_spec(self.layers)  # a typo or a missing layers.json fails before any model loads

    def alpha_params(self) -> AlphaParams:
        """The α constants; ``alpha_variant='code'`` clips at 2.3 (unless ``alpha_max`` is set) and rounds to 0.1."""
        code = self.alpha_variant == "code"
        default_max = AlphaParams.code().alpha_max if code else AlphaParams.paper().alpha_max
        return AlphaParams(
            a=self.alpha_a,
            b=self.alpha_b,
            c=self.alpha_c,
            alpha_min=self.alpha_min,
            alpha_max=self.alpha_max if self.alpha_max is not None else default_max,
            decimals=1 if code else None,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "UnlearnConfig":
        """Build from a mapping (e.g. a YAML file's ``unlearn:`` section); unknown keys are an error."""
        import typing

        hints = typing.get_type_hints(cls)
        unknown = sorted(set(values) - set(hints))
        if unknown:
            raise AmnesiaError(f"unlearn config: unknown key {unknown[0]!r} (known: {', '.join(sorted(hints))})")
        values = dict(values)
        for key, value in values.items():
            hint = hints[key]
            if hint == (float | str) and isinstance(value, (int, float)) and not isinstance(value, bool):
                values[key] = float(value)
            elif hint is float or hint == (float | None):
                if isinstance(value, int) and not isinstance(value, bool):
                    values[key] = float(value)
                elif not (isinstance(value, float) or (value is None and hint != float)):
                    raise AmnesiaError(f"unlearn config: {key} must be a number, got {value!r}")
            elif hint is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise AmnesiaError(f"unlearn config: {key} must be an integer, got {value!r}")
            elif hint is bool and not isinstance(value, bool):
                raise AmnesiaError(f"unlearn config: {key} must be true or false, got {value!r}")
        config = cls(**values)
        config.check()
        return config

    @classmethod
    def from_yaml(cls, path: str | Path, section: str | None = "unlearn") -> "UnlearnConfig":
        """Read a YAML file (its ``section`` mapping when present, else the whole file)."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise AmnesiaError(f"{path}: config file does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise AmnesiaError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if section and isinstance(data, dict) and isinstance(data.get(section), dict):
            data = data[section]
        if not isinstance(data, dict):
            raise AmnesiaError(f"{path}: expected a mapping of unlearning hyperparameters")
        try:
            return cls.from_dict(data)
        except AmnesiaError as exc:
            raise AmnesiaError(f"{path}: {exc}") from None


@dataclass(frozen=True)
class ModelOptions:
    """How to load a model; the CLI's ``--device --dtype --allow-pickle --trust-remote-code``."""

    device: str = "auto"
    dtype: str = "auto"
    allow_pickle: bool = False
    trust_remote_code: bool = False
