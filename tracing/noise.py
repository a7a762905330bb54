"""The corruption: Gaussian noise on the subject tokens' input embeddings (ROME).

The noise level is either relative, ``"s3"`` = 3 × the standard deviation of the subject
tokens' embeddings over the fact set (ROME's default), or an absolute float. Each fact gets its
own ``samples × n_subject_tokens × d_model`` standard-normal draw from a generator seeded by
``(seed, fact index)``, so a trace is reproducible and does not depend on which other facts run.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .bridge import EMBED_HOOK
from .config import NoiseLevel, parse_noise  # noqa: F401 - part of this module's API
from .errors import AmnesiaError
from .facts import TokenizedFact


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
