"""Forgotten or only hidden? Attacks that try to bring unlearned knowledge back (docs/audit.md).

:mod:`.quantize` (bf16; int8, NF4 and int4 through torchao), :mod:`.relearn`
(a few fine-tuning steps on rows the audit does not score), :mod:`.lens` (the logit lens on every
layer), :mod:`.core` (run them on a model and its references, recovery per forget metric above the
never-seen floor). A benchmark supplies an :class:`AuditTask`: its metrics and rows; the tables
and figures are :mod:`pipelines.audit`. Importing this package needs no torch.
"""

from .config import ATTACKS, RELEARN, AuditConfig
from .core import HELD_OUT, AuditTask, recovery, recovery_table, run_audit
from .quantize import SCHEMES

__all__ = ["ATTACKS", "AuditConfig", "AuditTask", "HELD_OUT", "RELEARN", "SCHEMES", "recovery", "recovery_table", "run_audit"]
