"""Unlearning methods as plug-ins: one module per method, found by name.

A method is a :class:`Method` subclass decorated with :func:`register` (see :mod:`.base` for the
contract and ``docs/extending.md`` for a worked example); :func:`get_method` finds it by name,
:func:`method_names` lists them in registration order. The built-in ones register on import:

=========  ===============================================================================
method     loss
=========  ===============================================================================
sha256     ``−CE_f + α·CE_r`` with the adaptive α (the paper; :mod:`.sha256`)
ga         ``−CE_f`` (gradient ascent)
gd         ``−CE_f + CE_r`` (gradient difference)
kl         ``−CE_f + KL(p_ref ‖ p_θ)`` on the retain rows, ``p_ref`` the frozen initial model
npo        ``(2/β)·mean log(1 + (π_θ(y|x)/π_ref(y|x))^β) + CE_r`` on forget rows (NPO with the
           retain term: OpenUnlearning's NPO, the literature's NPO+RT)
simnpo     ``γ·mean −(2/β)·logσ(β·(NLL/|y| − δ)) + α·CE_r`` (SimNPO: no reference model)
wga        ``γ·mean_t(−p_t^β·NLL_t) + α·CE_r`` (weighted gradient ascent)
satimp     ``γ·mean_t(−p_t^β₁(1−p_t)^β₂·NLL_t) + α·CE_r`` (SatImp)
ceu        ``mean_t CE(p_θ, softmax(z with the true token at −∞))`` (CE-U, forget rows only)
undial     ``mean_t CE(p_θ, softmax(z_ref − β·e_y))`` (UNDIAL, forget rows only)
pdu        ``γ·mean_t (max z − mean z)² + λ·(CE_r − ε)``, λ by dual ascent (PDU)
rmu        ``γ·mean (h_ℓ − c·u)²`` on forget + ``α·mean (h_ℓ − h_ℓ^ref)²`` on retain tokens at the
           steering layer ℓ, the last trained one (RMU)
idkdpo     ``γ·mean DPO(refusal ≻ true answer) + α·CE_r`` (IdkDPO)
=========  ===============================================================================

``CE_f`` is calibrated (:mod:`unlearn.calibration`): the trainer pushes each forget row up only
until it reaches the never-seen level and pulls it back past it, for every method alike.
"""

from .base import Batch, ForgetRetain, ForgetRetainWeights, Method, NoSettings, describe_methods, get_method, method_names, no_method_args, parse_settings, register, unregister

# The built-in methods, in the order --control methods lists them (each registers itself on import).
from . import sha256, ga, gd, kl, npo, simnpo, wga, satimp, ceu, undial, pdu, rmu, idkdpo  # noqa: E402,F401,I001

__all__ = ["Batch", "ForgetRetain", "ForgetRetainWeights", "Method", "NoSettings", "describe_methods", "get_method", "method_names", "no_method_args", "parse_settings", "register", "unregister"]
