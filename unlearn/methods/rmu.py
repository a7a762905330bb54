"""RMU, representation misdirection for unlearning (Li et al. 2024, "The WMDP Benchmark: Measuring
and Reducing Malicious Use With Unlearning"; github.com/centerforaisafety/wmdp, ``rmu/unlearn.py``;
OpenUnlearning's ``RMU``): at one steering layer ℓ, push the hidden state of the forget tokens
towards a fixed random direction ``c·u`` (``u`` uniform in [0, 1)^d, normalised; seeded) and keep
the retain tokens' hidden state at the frozen model's —
``γ·mean_rows mean_t mean_d (h_ℓ − c·u)² + α·mean_rows mean_t mean_d (h_ℓ − h_ℓ^ref)²`` over the
labelled positions, as OpenUnlearning computes it.

**Where it acts is what tracing chooses.** The paper steers layer 7 of Zephyr-7B's 32 and updates
the MLPs of layers 5–7; here the updated modules are the run's (``layers``/``kind``: the traced
selection by default) and the steering layer is the last of them (``steer_layer`` unset), so the
misdirection lands where the facts were located. The paper's choice scaled to depth —
``steer = round(7/32·L)``, layers ``steer−2 … steer`` (:func:`paper_layers`) — is
``unlearn.layers=A-B`` (the steering layer is then ``B``), and ``control: fixed`` without
``control_layers`` runs it beside the traced choice in one table. Defaults: ``steering_coeff`` 2 and α 1, γ 1
(OpenUnlearning's TOFU config; the WMDP runs used 6.5–300 with α up to 1200 on 7B models: the
scale of a hidden state grows with the model, set ``steering_coeff`` to it).

Calibrated forgetting applies per row: rows past the never-seen level are pulled back by their
NLL and leave the steering term, rows that arrived take no part.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tracing.errors import AmnesiaError

from .base import ForgetRetainWeights, Method, register


def paper_layers(n_layers: int) -> tuple[list[int], int]:
    """The paper's choice scaled to a model of ``n_layers``: (the updated layers, the steering layer)."""
    steer = min(n_layers - 1, max(0, round(7 / 32 * n_layers)))
    return list(range(max(0, steer - 2), steer + 1)), steer


def control_vector(dim: int, coeff: float, seed: int):
    """``coeff·u/‖u‖`` with ``u`` uniform in [0, 1)^dim from a generator seeded with ``seed`` (the reference's ``torch.rand``)."""
    import torch

    u = torch.rand(dim, generator=torch.Generator().manual_seed(seed))
    return u / u.norm() * coeff


def activation_loss(hidden, target, labels):
    """Per row: the mean over labelled positions of the mean over dimensions of ``(hidden − target)²``."""
    from ..losses import IGNORE

    mask = (labels != IGNORE).float()
    per_position = ((hidden.float() - target.float()) ** 2).mean(dim=-1)
    return (per_position * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


@dataclass(frozen=True)
class RMUSettings(ForgetRetainWeights):
    steering_coeff: float = field(default=2.0, metadata={"help": "norm c of the random direction the forget tokens' hidden state is pushed to"})
    steer_layer: int | None = field(default=None, metadata={"help": "the steering layer ℓ (unset: the last trained layer, the traced window's by default)"})

    def check(self) -> None:
        super().check()
        if not self.steering_coeff > 0:
            raise AmnesiaError(f"method_args steering_coeff {self.steering_coeff}: expected a positive number")
        if self.steer_layer is not None and self.steer_layer < 0:
            raise AmnesiaError(f"method_args steer_layer {self.steer_layer}: expected a layer index >= 0")


@register
class RMU(Method):
    name = "rmu"
    summary = "RMU: steer the forget tokens' hidden state at the last trained layer to a random direction, keep the retain tokens' (--method-arg steering_coeff=, steer_layer=)"
    reference = "retain"
    hidden_states = True
    Settings = RMUSettings
    logs = {"rmu_forget": "", "rmu_retain": ""}

    @classmethod
    def published_layers(cls, n_layers: int) -> list[int]:
        return paper_layers(n_layers)[0]

    def steer_layer(self, batch) -> int:
        layer = self.settings.steer_layer if self.settings.steer_layer is not None else max(batch.layers or [0])
        depth = len(batch.forget_hidden) - 1
        if not 0 <= layer < depth:
            raise AmnesiaError(f"method rmu: steer_layer {layer} is out of range for a model with {depth} layers (0..{depth - 1})")
        return layer

    def loss(self, batch):
        from ..losses import calibrated_rows

        s = self.settings
        layer = self.steer_layer(batch)
        h_forget = batch.forget_hidden[layer + 1]
        u = control_vector(h_forget.size(-1), s.steering_coeff, self.config.seed).to(h_forget.device)
        forget = calibrated_rows(activation_loss(h_forget, u.expand_as(h_forget), batch.forget_labels), batch.signs, batch.forget_nll, batch.forget_tokens)
        h_retain = batch.retain_hidden[layer + 1]
        retain = activation_loss(h_retain, batch.reference_hidden("retain")[layer + 1], batch.retain_labels).mean()
        return s.gamma * forget + s.alpha * retain, {"rmu_forget": forget.item(), "rmu_retain": retain.item()}
