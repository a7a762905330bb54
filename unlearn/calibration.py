"""Calibrated forgetting: the per-token NLL at which a forget row looks like text the model never saw.

The SemEval-2025 Task 4 membership-inference score is ``1 − 2·|AUC − 0.5|`` of the per-document
loss of forget documents (members) against documents the model never saw (non-members): it
punishes forgetting too little *and* too much. Pushing the forget loss to infinity (gradient
ascent) overshoots; the level to aim at is the loss of never-seen text of the same kind, measured
on the model before unlearning.

:func:`reference_level` measures it: the ``quantile`` (default the median) of the per-document
mean NLL of reference documents — by default the data's *validation* non-members
(``mia_data/validation/nonmember.jsonl``), never the test MIA files. The median, not the mean:
a forget row held at the non-members' median NLL is ranked above and below exactly half of them,
which is an AUC of 0.5 whatever the shape of their distribution; the mean of a skewed
distribution (long tails are the rule for NLL) is not. The trainer then stops (``stop``) or pulls
back (``pull``) each forget row at that level (:func:`unlearn.losses.forget_signs`).

**Spread targets** (``forget_spread``, the default): a median holds every forget row at one
value, and membership inference then compares a pile with the test's never-seen documents — a
different sample, whose median lies a little above or below the validation one (on the demo,
0.4 nats: AUC 0.72 for a pile that sat exactly at the validation median). So each forget row
aims at its own quantile of the reference NLLs instead, the quantiles spread evenly over (0, 1)
within each kind of row (:func:`unlearn.dataset.row_quantiles`: the documents membership
inference reads span the distribution on their own): the forgotten rows end distributed like never-seen
text, and a shift between two samples of never-seen text moves the AUC little (0.51 for the same
model's rows spread like the validation documents). ``ForgetTarget.distribution`` holds the
sorted reference NLLs; :func:`levels_for` reads a row's level from it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from tracing.errors import AmnesiaError

from .data import SemEvalData, read_jsonl


@dataclass(frozen=True)
class ForgetTarget:
    """The resolved forget level and where it came from (recorded in ``unlearn.json``)."""

    level: float | None
    source: str
    quantile: float | None = None
    documents: int = 0
    reference_mean: float | None = None
    reference_q10: float | None = None
    reference_q90: float | None = None
    distribution: list[float] | None = None  # the reference documents' per-token NLLs, sorted (spread targets read it)
    measure: Callable | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "measure"}


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (linear interpolation between order statistics)."""
    vals = sorted(v for v in values if math.isfinite(v))
    if not vals:
        raise AmnesiaError("no finite reference NLL to calibrate the forget target on")
    pos = q * (len(vals) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


def read_reference(path: str | Path) -> tuple[list[str], str]:
    """Reference documents from a ``.jsonl`` file (``document`` field) or a folder with ``nonmember.jsonl``."""
    path = Path(path).expanduser()
    if path.is_dir():
        file = path / "nonmember.jsonl"
        if not file.is_file():
            raise AmnesiaError(f"{path}: no nonmember.jsonl (the forget reference is a .jsonl of never-seen documents or a folder holding nonmember.jsonl)")
        path = file
    if not path.is_file():
        raise AmnesiaError(f"{path}: forget reference does not exist (expected a .jsonl file with a 'document' field per line)")
    rows = read_jsonl(path, required=("document",))
    docs = [r["document"] for r in rows if isinstance(r["document"], str) and r["document"].strip()]
    if not docs:
        raise AmnesiaError(f"{path}: no documents (expected one JSON object per line with a non-empty 'document')")
    return docs, str(path)


def reference_documents(data: SemEvalData | None, reference: str | None) -> tuple[list[str], str] | None:
    """The never-seen documents to calibrate on: ``reference`` when given, else the data's
    validation non-members; ``None`` when neither exists. Refuses any document that is also a
    test MIA document (the test must never be read during training)."""
    if reference:
        docs, source = read_reference(reference)
    elif data is not None and "nonmember" in data.mia_validation:
        docs = list(data.mia_validation["nonmember"]["document"])
        source = str(Path(data.source) / "mia_data" / "validation" / "nonmember.jsonl")
    else:
        return None
    if data is not None and data.mia:
        test = set(data.mia["member"]["document"]) | set(data.mia["nonmember"]["document"])
        clash = sum(d in test for d in docs)
        if clash:
            raise AmnesiaError(f"{source}: {clash} of its documents are test MIA documents (mia_data/member.jsonl / nonmember.jsonl); "
                               "calibrate on validation non-members (mia_data/validation/nonmember.jsonl), never on the test")
    return docs, source


def reference_level(model, tokenizer, documents: Sequence[str], *, q: float = 0.5, source: str = "", batch_size: int | None = None, progress: bool = False) -> ForgetTarget:
    """The ``q`` quantile of the documents' mean token NLL under ``model`` (measured now, no gradient)."""
    from .eval.nll import NLLOptions, document_nll

    documents = list(documents)
    nll = document_nll(model, tokenizer, documents, NLLOptions(batch_size=batch_size, progress=progress, desc="forget reference"))
    finite = [v for v in nll if math.isfinite(v)]

    def measure(current) -> list[float]:
        """The reference NLLs on ``current`` now, sorted (finite ones; empty when none is: a diverging model, the loss guard's to stop)."""
        return sorted(v for v in document_nll(current, tokenizer, documents, NLLOptions(batch_size=batch_size)) if math.isfinite(v))

    return ForgetTarget(
        level=quantile(finite, q), source=source, quantile=q, documents=len(finite),
        reference_mean=statistics.fmean(finite), reference_q10=quantile(finite, 0.1), reference_q90=quantile(finite, 0.9),
        distribution=sorted(finite), measure=measure,
    )


def levels_for(quantiles, distribution: Sequence[float]) -> list[float]:
    """Each quantile of ``distribution`` (the per-row levels of spread targets)."""
    return [quantile(distribution, float(q)) for q in quantiles]


def resolve_forget_target(model, tokenizer, target: str | float, *, q: float = 0.5, data: SemEvalData | None = None,
                          reference: str | None = None, documents: Sequence[str] | None = None, progress: bool = False) -> ForgetTarget:
    """``target`` ``none`` → no level; a number → that level; ``auto`` → :func:`reference_level` on
    ``documents`` (or those of :func:`reference_documents`), or no level with ``source`` saying why."""
    if isinstance(target, str) and target == "none":
        return ForgetTarget(level=None, source="none")
    if not (isinstance(target, str) and target == "auto"):
        return ForgetTarget(level=float(target), source="manual")
    if documents is not None:
        found = (list(documents), "in-memory documents")
    else:
        found = reference_documents(data, reference)
    if found is None:
        return ForgetTarget(level=None, source="auto: no reference documents (mia_data/validation/nonmember.jsonl or --forget-reference); forgetting is not calibrated")
    docs, source = found
    return reference_level(model, tokenizer, docs, q=q, source=source, progress=progress)


__all__ = ["ForgetTarget", "levels_for", "quantile", "read_reference", "reference_documents", "reference_level", "resolve_forget_target"]
