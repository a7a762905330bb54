"""Gradient difference: ``−CE_f + CE_r`` (the shared task's baseline; Liu et al. 2022)."""

from __future__ import annotations

from .base import Method, register


@register
class GradientDifference(Method):
    name = "gd"
    summary = "gradient difference, −CE_f + CE_r"

    def loss(self, batch):
        return -batch.ce_forget + batch.ce_retain, {}
