"""Gradient ascent: ``−CE_f`` (the shared task's baseline; Jang et al. 2023). Forget rows only."""

from __future__ import annotations

from .base import Method, register


@register
class GradientAscent(Method):
    name = "ga"
    summary = "gradient ascent, −CE_f (forget rows only)"
    needs_retain = False

    def loss(self, batch):
        return -batch.ce_forget, {}
