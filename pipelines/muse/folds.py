"""MUSE's C5 scalability and C6 sustainability: unlearning growing forget sets, and disjoint
forget sets one after another (Shi et al. 2024, §3; the authors' ``scal``/``sust`` splits and
``baselines/scripts/unlearn_*_scal.sh`` / ``_sust.sh``).

* **C5 scalability** (``muse.scalability``): step k unlearns folds 1..k of the forget set, each
  step from the target — does a method still forget, and keep utility, as the request grows?
* **C6 sustainability** (``muse.sustainability``): step k unlearns fold k from the model step k−1
  left (step 1 from the target) — does utility survive a sequence of requests?

The folds: the run's forget *training* rows cut in order into ``muse.folds`` parts, each kind of
row (documents, questions) on its own, so every fold holds both (:func:`fold_rows`). A run on
MUSE's own rows that has the authors' ``scal/forget_k.json`` / ``sust/forget_k.json`` unlearns
those articles instead, cut into documents as the forget corpus is. Every step is the run's own
recipe — the traced layers, the method, its settings, the step size probed again for the step's
rows, the run's validation rows and reference documents — and is scored with C1–C4 on the run's
test rows. A step whose rows and starting model are the run's own is the run's ``unlearned/``
(C5's last step over folds, which is the whole request; C6's first step is C5's first).
:meth:`pipelines.muse.pipeline.MusePipeline.benchmark_stages` runs the steps.

In the CPU-sized run every forget document is a VerbMem passage and every forget question a
KnowMem row, so :func:`requested_scores` also reads VerbMem and KnowMem on the rows requested so
far and on the forget training rows not requested yet (what a step forgot beyond its request).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from tracing.errors import AmnesiaError
from unlearn.data import row_kind

MODES = {"scal": "C5 scalability", "sust": "C6 sustainability"}
DOCUMENT_ID = re.compile(r"^muse-forget-doc(\d+)sc0$")  # the CPU-sized run's forget document i is VerbMem row i
QUESTION_ID = re.compile(r"^muse-forget-q(\d+)qa0$")  # and its forget question i is KnowMem row i


def cut(rows: list, parts: int) -> list[list]:
    """``rows`` in order in ``parts`` consecutive parts whose sizes differ by at most one (the first ones larger)."""
    size, extra = divmod(len(rows), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (i < extra)
        out.append(rows[start:end])
        start = end
    return out


def fold_rows(train: list[dict], folds: int) -> list[list[dict]]:
    """The forget training rows in ``folds`` disjoint folds, each kind of row (``row_kind``: documents, questions) cut in order."""
    by_kind: dict[str, list[dict]] = {}
    for row in train:
        by_kind.setdefault(row_kind(row["id"]), []).append(row)
    if len(by_kind.get("sc", train)) < folds:
        raise AmnesiaError(f"muse.folds {folds}: the request has {len(by_kind.get('sc', train))} forget training documents; expected at least one per fold")
    parts = [cut(rows, folds) for rows in by_kind.values()]
    return [[row for p in parts for row in p[i]] for i in range(folds)]


def file_fold_rows(articles: list[list[str]], mode: str, section, task: str) -> list[list[dict]]:
    """MUSE's own ``scal``/``sust`` forget sets as request rows (``task`` their task): each set's articles in documents of ``chunk_words`` words."""
    from .mini import split_words, word_chunks

    out = []
    for k, texts in enumerate(articles, 1):
        pairs = (split_words(c, section.prompt_words) for t in texts for c in word_chunks(t, section.chunk_words))
        out.append([{"id": f"muse-forget-{mode}{k}-doc{i:03d}sc0", "input": p, "output": o, "task": task, "split": "forget"}
                    for i, (p, o) in enumerate(pair for pair in pairs if pair[1].strip())])
    return out


def step_rows(mode: str, folds: list[list[dict]], *, given: bool = False) -> list[list[dict]]:
    """Each step's forget training rows: C5 folds 1..k (a given ``scal`` set already holds the ones before), C6 fold k."""
    if mode == "sust" or given:
        return folds
    steps = []
    for k in range(1, len(folds) + 1):
        rows = [row for fold in folds[:k] for row in fold]  # in the request's order: the documents, then the questions
        steps.append([r for r in rows if row_kind(r["id"]) == "sc"] + [r for r in rows if row_kind(r["id"]) != "sc"])
    return steps


def _mean(values: list[float]) -> float | None:
    return 100 * sum(values) / len(values) if values else None


def requested_scores(predictions: Path, requested: list[str], train_ids: list[str]) -> dict:
    """VerbMem and KnowMem on forget (ROUGE-L F1 × 100) over the rows requested so far, and over
    the forget training rows not requested yet, from a scores stage's ``predictions.csv`` (the
    CPU-sized run's ids name their VerbMem / KnowMem row; other ids: None)."""
    with open(predictions, newline="", encoding="utf-8") as f:
        f1 = {(r["set"], int(r["index"])): float(r["rouge_l_f1"]) for r in csv.DictReader(f) if r["set"] in ("verbmem", "knowmem_forget")}

    def scores_of(ids: list[str]) -> tuple[float | None, float | None]:
        docs = [int(m.group(1)) for i in ids if (m := DOCUMENT_ID.match(i))]
        questions = [int(m.group(1)) for i in ids if (m := QUESTION_ID.match(i))]
        return (_mean([f1[("verbmem", d)] for d in docs if ("verbmem", d) in f1]),
                _mean([f1[("knowmem_forget", q)] for q in questions if ("knowmem_forget", q) in f1]))

    verb_req, know_req = scores_of(requested)
    verb_rest, know_rest = scores_of([i for i in train_ids if i not in set(requested)])
    return {"verbmem_requested": verb_req, "knowmem_requested": know_req, "verbmem_not_requested": verb_rest, "knowmem_not_requested": know_rest}
