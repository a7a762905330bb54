"""IdkDPO: direct preference optimization that prefers a refusal to the true answer (Maini et al.
2024, "TOFU: A Task of Fictitious Unlearning for LLMs", its "IDK"/preference baseline; Rafailov et
al. 2023 for DPO; OpenUnlearning's ``DPO`` trainer with TOFU's ``idk.jsonl`` alternates). Per
forget row, with ``y_w`` a refusal ("I don't know.") and ``y_l`` the true answer,
``−(2/β)·logσ(β·[(log π_θ(y_w|x) − log π_ref(y_w|x)) − (log π_θ(y_l|x) − log π_ref(y_l|x))])``,
weighted γ, plus ``α·CE_r``; π_ref the frozen initial model.

The refusals are the package's own short list (``refusals.txt``, one per line; ``refusals`` names
another file), each forget row's drawn with the run's seed; the row's leading whitespace is kept,
so a raw-format prompt reads as the original answer did. Prompt tokens labelled by
``forget_tokens`` count on both sides and cancel in the difference of log-ratios (the same prompt
under the same model). Defaults are OpenUnlearning's (β 0.1, γ 1, α 1).

Calibrated forgetting applies per row: rows past the never-seen level are pulled back by their
NLL of the true answer and leave the preference term, rows that arrived take no part.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from tracing.errors import AmnesiaError

from .base import ForgetRetain, ForgetRetainWeights, register

REFUSALS = Path(__file__).with_name("refusals.txt")


def read_refusals(path: str | Path | None = None) -> list[str]:
    """The refusal answers of ``path`` (default the package's list): one per non-empty line."""
    path = Path(path) if path else REFUSALS
    if not path.is_file():
        raise AmnesiaError(f"{path}: refusal answers file does not exist (one answer per line)")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise AmnesiaError(f"{path}: no refusal answers (expected one answer per line)")
    return lines


def dpo_loss(win_nll, win_ref_nll, lose_nll, lose_ref_nll, beta: float):
    """Per row ``−(2/β)·logσ(β·((ref_w − nll_w) − (ref_l − nll_l)))`` from summed NLLs (log π = −NLL)."""
    import torch.nn.functional as F

    return -F.logsigmoid(beta * ((win_ref_nll - win_nll) - (lose_ref_nll - lose_nll))) * (2.0 / beta)


@dataclass(frozen=True)
class IdkDPOSettings(ForgetRetainWeights):
    beta: float = field(default=0.1, metadata={"help": "DPO's inverse temperature β"})
    refusals: str = field(default="", metadata={"help": "a file of refusal answers, one per line (default: the package's refusals.txt)"})

    def check(self) -> None:
        super().check()
        if not self.beta > 0:
            raise AmnesiaError(f"method_args beta {self.beta}: expected a positive number")
        read_refusals(self.refusals or None)


@register
class IdkDPO(ForgetRetain):
    name = "idkdpo"
    summary = "IdkDPO: DPO preferring a refusal (\"I don't know.\") to the true answer, + α·CE_r (--method-arg beta=, refusals=FILE)"
    reference = "forget"
    alternates = True
    Settings = IdkDPOSettings
    logs = {"idkdpo": ""}

    def alternate_answers(self, rows, seed):
        """A refusal per row, drawn with ``seed``, with the row's own leading whitespace."""
        refusals = read_refusals(self.settings.refusals or None)
        rng = random.Random(f"{seed}-refusals")
        return [r["output"][: len(r["output"]) - len(r["output"].lstrip())] + rng.choice(refusals) for r in rows]

    def forget_term(self, batch):
        from ..losses import calibrated_rows, sequence_nll

        win_nll, _ = sequence_nll(batch.alternate_logits, batch.alternate_labels)
        win_ref, _ = sequence_nll(batch.reference_logits("alternate"), batch.alternate_labels)
        lose_ref, _ = sequence_nll(batch.reference_logits("forget"), batch.forget_labels)
        per_row = dpo_loss(win_nll, win_ref.detach(), batch.forget_nll, lose_ref.detach(), self.settings.beta)
        return calibrated_rows(per_row, batch.signs, batch.forget_nll, batch.forget_tokens)
