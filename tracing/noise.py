"""The corruption: Gaussian noise on the subject tokens' input embeddings (ROME).

The noise level is either relative, ``"s3"`` = 3 × the standard deviation of the subject
tokens' embeddings over the fact set (ROME's default), or an absolute float. Each fact gets its
own ``samples × n_subject_tokens × d_model`` standard-normal draw from a generator seeded by
``(seed, fact index)``, so a trace is reproducible and does not depend on which other facts run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import torch

from .bridge import EMBED_HOOK
from .errors import AmnesiaError
from .facts import TokenizedFact

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


@torch.no_grad()
def subject_embeddings(bridge, facts: Sequence[TokenizedFact]) -> torch.Tensor:
    """The ``hook_embed`` vectors of every subject token of ``facts``, stacked ``[n, d_model]``."""
    device = next(bridge.parameters()).device
    rows = []
    for tf in facts:
        captured = {}

        def grab(act, hook):
            captured["x"] = act.detach()

        ids = torch.tensor([tf.input_ids], device=device)
        with bridge.hooks(fwd_hooks=[(EMBED_HOOK, grab)]):
            bridge(ids, return_type=None, stop_at_layer=0)
        s, e = tf.subject_range
        rows.append(captured["x"][0, s:e].float())
    if not rows:
        raise AmnesiaError("no facts to measure the subject-embedding std on")
    return torch.cat(rows)


def embedding_std(bridge, facts: Sequence[TokenizedFact]) -> float:
    """ROME's noise scale: the std of all subject-token embedding entries over ``facts``."""
    x = subject_embeddings(bridge, facts)
    if x.numel() < 2:
        raise AmnesiaError("need at least two subject embedding values to measure their std")
    return float(x.std().item())


def draw_noise(seed: int, index: int, samples: int, n_tokens: int, d_model: int, std: float) -> torch.Tensor:
    """``std`` × standard normal noise ``[samples, n_tokens, d_model]`` (CPU, float32), seeded by (seed, index)."""
    gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(index)) % (2**63))
    return torch.randn(samples, n_tokens, d_model, generator=gen, dtype=torch.float32) * float(std)
