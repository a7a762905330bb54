"""Tracing's settings, importable without torch (the CLI builds its ``--help`` from them).

:class:`TraceConfig` (how to trace), :class:`SelectionConfig` (how to pick layers from the AIE),
the noise-level parser and the names they validate against. :mod:`tracing.tracer`,
:mod:`tracing.selection` and :mod:`tracing.noise` re-export them.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from .errors import AmnesiaError
from .settings import setting

#: What can be restored: the residual stream after a block, the MLP output, the attention output.
KINDS = ("hidden", "mlp", "attn")
#: ROME's token groups of a prompt (see :func:`tracing.facts.token_groups`).
TOKEN_GROUPS = ("first_subject", "middle_subject", "last_subject", "first_subsequent", "further", "last")
#: ``exact``: ROME's tracing of every (token, layer); ``attribution``: the first-order estimate of
#: every cell from one backward pass; ``auto``: the estimate everywhere, exact tracing at the
#: ``confirm`` token groups (the ones layer selection reads), with the agreement of the two.
METHODS = ("exact", "attribution", "auto")
MODES = ("window", "threshold")
#: Selection's ``group: auto`` candidates: the subject tokens where ROME locates the recall of a fact.
SUBJECT_GROUPS = ("first_subject", "last_subject")

_RELATIVE = re.compile(r"^s(\d+(?:\.\d*)?|\.\d+)$")


@dataclass(frozen=True)
class NoiseLevel:
    """``relative=True``: ``value`` × the subject-embedding std; else ``value`` is the std itself."""

    value: float
    relative: bool

    def std(self, embedding_std: float | None) -> float:
        if not self.relative:
            return self.value
        if embedding_std is None:
            raise AmnesiaError("relative noise level needs the subject-embedding std of the fact set")
        return self.value * embedding_std

    def __str__(self) -> str:
        return f"s{self.value:g}" if self.relative else f"{self.value:g}"


def parse_noise(spec: str | float | NoiseLevel) -> NoiseLevel:
    """``"s3"`` → 3 × embedding std; ``"0.1"`` or ``0.1`` → std 0.1. Must be positive."""
    if isinstance(spec, NoiseLevel):
        level = spec
    elif isinstance(spec, (int, float)) and not isinstance(spec, bool):
        level = NoiseLevel(float(spec), False)
    elif isinstance(spec, str):
        text = spec.strip().lower()
        match = _RELATIVE.match(text)
        try:
            level = NoiseLevel(float(match.group(1)), True) if match else NoiseLevel(float(text), False)
        except ValueError:
            raise AmnesiaError(f"noise {spec!r}: expected sN (N × the subject-embedding std, e.g. s3) or a positive number") from None
    else:
        raise AmnesiaError(f"noise {spec!r}: expected sN (e.g. s3) or a positive number")
    if not level.value > 0 or level.value != level.value or level.value == float("inf"):
        raise AmnesiaError(f"noise {spec!r}: expected a positive, finite level")
    return level


@dataclass(frozen=True)
class TraceConfig:
    """How to trace. Defaults are ROME's (``samples=10``, noise ``s3``, ``window=10``). Each field is
    an ``amnesia trace`` option (:mod:`tracing.settings`)."""

    kinds: tuple[str, ...] = setting(KINDS, group="tracing", help="comma-separated sites to restore: hidden (residual stream), mlp, attn")
    samples: int = setting(10, group="tracing", help="noise draws per fact")
    noise: str | float = setting("s3", group="tracing", help="noise std: sN = N × the std of the subject-token embeddings over the facts, or a number")
    window: int = setting(10, group="tracing", help="MLP/attention layers restored together around each layer (ROME's window)")
    seed: int = setting(0, group="tracing", help="noise seed; same seed, same trace")
    method: str = setting("exact", group="tracing", choices=METHODS, help=(
        "exact: ROME's causal tracing of every token and layer; attribution: the attribution-patching estimate of every cell (one backward per fact); "
        "auto: the estimate everywhere and exact tracing at the --confirm tokens (the group layer selection reads), with how well the two agree"))
    batch_size: int | None = setting(None, group="tracing", help="rows (restorations × samples) per forward pass; default: as many as --memory-mb allows")
    memory_mb: int | None = setting(None, group="tracing", help="activation memory per forward pass used to size batches; default 1024 on CPU, half the free GPU memory")
    max_tokens: int = setting(128, group="facts", help="skip prompts longer than this many tokens")
    suffix: bool = setting(True, group="tracing", option="--no-suffix", action="store_false",
                           help="run full sequences for every restoration instead of reusing the corrupted prefix (slower, for checking)")
    skip_layers: bool = setting(True, group="tracing", option="--no-skip-layers", action="store_false",
                                help="run every layer for every restoration instead of entering the stack at the first restored layer (slower, for checking)")
    confirm: tuple[str, ...] = setting(("last_subject",), group="tracing",
                                       help="with --method auto: comma-separated token groups traced exactly (--select-group is always added)")
    float32: bool = setting(True, group="tracing", option="--keep-dtype", action="store_false",
                            help="trace a 16-bit model in its own dtype instead of float32 (the cast is undone exactly afterwards either way)")

    def check(self) -> "TraceConfig":
        kinds = tuple(self.kinds)
        if not kinds or any(k not in KINDS for k in kinds) or len(set(kinds)) != len(kinds):
            raise AmnesiaError(f"kinds {','.join(kinds) or '(none)'}: expected distinct values among {', '.join(KINDS)}")
        if self.samples < 1:
            raise AmnesiaError(f"samples {self.samples}: expected a positive integer")
        if self.window < 1:
            raise AmnesiaError(f"window {self.window}: expected a positive integer")
        if self.method not in METHODS:
            raise AmnesiaError(f"method {self.method!r}: expected one of {', '.join(METHODS)}")
        confirm = tuple(self.confirm)
        if not confirm or any(g not in TOKEN_GROUPS for g in confirm):
            raise AmnesiaError(f"confirm {','.join(confirm) or '(none)'}: expected token groups among {', '.join(TOKEN_GROUPS)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise AmnesiaError(f"batch_size {self.batch_size}: expected a positive integer (or automatic)")
        if self.memory_mb is not None and self.memory_mb < 1:
            raise AmnesiaError(f"memory_mb {self.memory_mb}: expected a positive integer")
        if self.max_tokens < 1:
            raise AmnesiaError(f"max_tokens {self.max_tokens}: expected a positive integer")
        parse_noise(self.noise)
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kinds"] = list(self.kinds)
        d["confirm"] = list(self.confirm)
        return d


@dataclass(frozen=True)
class SelectionConfig:
    """How to pick layers from the traced AIE. Each field is an ``amnesia trace`` option ``--select-<field>``."""

    mode: str = setting("window", group="layer selection", choices=MODES,
                        help="best contiguous window of --select-k layers, or every layer above --select-fraction of the maximum")
    k: int | None = setting(None, group="layer selection", help="layers in the selected window (clipped to the model's depth); default: --select-depth-fraction of the layers")
    fraction: float = setting(0.5, group="layer selection", help="threshold mode: keep layers with AIE >= this fraction of the largest")
    kind: str = setting("mlp", group="layer selection", choices=("mlp", "attn", "hidden"), help="which traced kind's AIE selects layers")
    group: str = setting("auto", group="layer selection", choices=("auto", *TOKEN_GROUPS), help=(
        "which token group's AIE selects layers; auto = each subject token group (first, last) selects on its own and the one with the "
        "largest AIE among those with evidence wins"))
    depth_fraction: float = setting(0.375, group="layer selection",
                                    help="without --select-k: the window is this fraction of the layers, rounded (3/8 = the paper's 6 of OLMo-1B's 16)")
    evidence: bool = setting(True, group="layer selection",
                             help="keep only the window's layers whose AIE 95% interval is above 0 (all of them, with a warning, when none is)")

    @property
    def groups(self) -> tuple[str, ...]:
        """The token groups selection reads: ``group``, or every subject group for ``auto``."""
        return SUBJECT_GROUPS if self.group == "auto" else (self.group,)

    def k_for(self, n_layers: int) -> int:
        """The window size for a model of ``n_layers``: ``k``, or ``depth_fraction`` of the layers."""
        if self.k is not None:
            return min(self.k, n_layers)
        return max(1, min(n_layers, round(self.depth_fraction * n_layers)))

    def check(self) -> "SelectionConfig":
        if self.mode not in MODES:
            raise AmnesiaError(f"selection mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if self.k is not None and self.k < 1:
            raise AmnesiaError(f"selection k {self.k}: expected a positive number of layers (or none: a fraction of the depth)")
        if not 0 < self.depth_fraction <= 1:
            raise AmnesiaError(f"selection depth_fraction {self.depth_fraction}: expected a number in (0, 1]")
        if not 0 < self.fraction <= 1:
            raise AmnesiaError(f"selection fraction {self.fraction}: expected a number in (0, 1]")
        if self.kind not in KINDS:
            raise AmnesiaError(f"selection kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        if self.group != "auto" and self.group not in TOKEN_GROUPS:
            raise AmnesiaError(f"selection group {self.group!r}: expected auto or one of {', '.join(TOKEN_GROUPS)}")
        return self
