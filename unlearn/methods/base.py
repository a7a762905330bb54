"""What an unlearning method is: a :class:`Method` subclass in one module, registered by name.

The trainer (:class:`unlearn.trainer.UnlearnTrainer`) does everything that is the same for every
method, once: one forward pass over a micro-batch's forget and retain rows, the forget rows'
NLLs, the calibrated signs (which rows to push up, pull back or leave, :func:`unlearn.losses.forget_signs`),
the signed forget cross-entropy, the retain cross-entropy, the frozen reference model's logits
on demand, logging, the per-epoch sums, resume and the loss guards. It hands the method a
:class:`Batch`; the method returns ``(loss, logs)``. A method declares:

* ``name`` (what ``--method`` and ``unlearn.method`` say) and ``summary`` (one line of help);
* ``needs_retain``: whether it reads retain rows (the trainer then forwards them with the forget rows);
* ``reference``: ``"forget"`` / ``"retain"`` when it reads the frozen initial model's logits (or hidden states) on those rows;
* ``hidden_states``: whether it reads the hidden states (the trainer then asks the model for them);
* ``alternates``: whether it reads an alternate answer per forget row (``alternate_answers``; the
  trainer forwards those rows with the others);
* ``Settings``: a dataclass of its own settings (``metadata={"help": ...}`` per field), given as
  ``unlearn.method_args`` / ``--method-arg KEY=VALUE``;
* ``logs``: the numbers it logs beside ``loss``, ``ce_forget``, ``ce_retain`` (key → label on the
  progress bar, ``""`` for none) and ``ranges``: those whose per-epoch lowest/highest are kept;
* optionally ``state_dict``/``load_state_dict`` (state carried through checkpoints),
  ``record`` (what ``unlearn.json`` keeps about it) and ``published_layers(n_layers)`` (the layers
  its paper updates, scaled to the model's depth: what ``control: fixed`` compares the traced
  layers with when ``control_layers`` is not given).

This module imports no torch: the registry is read by ``--help`` and the config checks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from tracing.errors import AmnesiaError, did_you_mean

_registry: dict[str, type["Method"]] = {}


@dataclass(frozen=True)
class NoSettings:
    """A method without settings of its own."""


@dataclass
class Batch:
    """One micro-batch as the trainer prepared it (torch tensors; row ``i`` of each forget tensor is the same row).

    ``forget_nll`` / ``forget_tokens``: per row, the summed NLL of its forget tokens and how many
    there are. ``signs``: per row, ``+1`` push its NLL up, ``-1`` pull it back down (it is past the
    calibrated level), ``0`` leave it (no level: all ``+1``). ``ce_forget``: the signed token-mean
    cross-entropy of the forget rows (``−ce_forget`` is the calibrated gradient-ascent term).
    ``ce_retain``: the token-mean cross-entropy of the retain rows (``None`` unless ``needs_retain``).
    ``reference_logits("forget" | "retain")``: the frozen initial model's logits on those rows
    (methods with ``reference``). ``epoch``: 0-based. For a method with ``hidden_states``:
    ``forget_hidden`` / ``retain_hidden`` (the model's hidden states, HF's ``hidden_states`` tuple:
    entry ``ℓ + 1`` is decoder layer ℓ's output), ``reference_hidden("forget" | "retain")`` (the
    frozen model's), and ``layers``, the trained layers. For a method with ``alternates``:
    ``alternate_logits`` / ``alternate_labels`` (row ``i``: forget row ``i``'s prompt with its
    alternate answer) and ``reference_logits("alternate")``.
    """

    epoch: int
    forget_logits: Any
    forget_labels: Any
    forget_nll: Any
    forget_tokens: Any
    signs: Any
    ce_forget: Any
    retain_logits: Any = None
    retain_labels: Any = None
    ce_retain: Any = None
    reference_logits: Callable[[str], Any] | None = None
    forget_hidden: Any = None
    retain_hidden: Any = None
    layers: list[int] | None = None
    reference_hidden: Callable[[str], Any] | None = None
    alternate_logits: Any = None
    alternate_labels: Any = None


class Method:
    """The base of every unlearning method; see the module docstring."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    needs_retain: ClassVar[bool] = True
    reference: ClassVar[str | None] = None
    Settings: ClassVar[type] = NoSettings
    logs: ClassVar[dict[str, str]] = {}
    ranges: ClassVar[tuple[str, ...]] = ()
    hidden_states: ClassVar[bool] = False
    alternates: ClassVar[bool] = False

    def __init__(self, config, settings=None):
        self.config = config
        self.settings = settings if settings is not None else self.settings_from(config)

    @classmethod
    def settings_from(cls, config):
        """The method's ``Settings`` from ``config.method_args``."""
        return parse_settings(cls, getattr(config, "method_args", None) or {})

    def loss(self, batch: Batch):
        """``(loss, logs)``: the scalar loss tensor of ``batch`` and the floats it logs (keys of ``logs``)."""
        raise NotImplementedError(f"method {self.name}: no loss")

    def alternate_answers(self, rows: list[dict], seed: int) -> list[str]:
        """With ``alternates``: the answer each forget row (``id``, ``input``, ``output``) is trained towards instead."""
        raise NotImplementedError(f"method {self.name}: no alternate answers")

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def record(self) -> dict:
        """What ``unlearn.json`` keeps about the method beyond its losses (merged into the manifest)."""
        return {}

    @classmethod
    def published_layers(cls, n_layers: int) -> list[int] | None:
        """The layers the method's paper updates, scaled to a model of ``n_layers`` (``None``: it names none)."""
        return None


@dataclass(frozen=True)
class ForgetRetainWeights:
    """The weights of a ``γ·L_f + α·CE_r`` method (:class:`ForgetRetain`); a method's settings subclass
    it, re-declaring a default where its reference differs."""

    gamma: float = dataclasses.field(default=1.0, metadata={"help": "weight γ of the forget term"})
    alpha: float = dataclasses.field(default=1.0, metadata={"help": "weight α of the retain cross-entropy"})

    def check(self) -> None:
        if not (self.gamma >= 0 and self.alpha >= 0):
            raise AmnesiaError(f"method_args gamma {self.gamma}, alpha {self.alpha}: expected weights >= 0")


class ForgetRetain(Method):
    """A method whose loss is ``γ·forget_term(batch) + α·CE_r`` (settings: :class:`ForgetRetainWeights`),
    logging the forget term under the method's name."""

    Settings: ClassVar[type] = ForgetRetainWeights

    def forget_term(self, batch: Batch):
        """The method's forget term (a scalar tensor), already under the calibrated signs."""
        raise NotImplementedError(f"method {self.name}: no forget term")

    def loss(self, batch: Batch):
        term = self.forget_term(batch)
        return self.settings.gamma * term + self.settings.alpha * batch.ce_retain, {self.name: term.item()}


def _coerce(value, kind: str, where: str):
    """A string from a command line as the field's type (``int``, ``float``, ``bool``, ``str``; ``X | None``
    also takes ``none``/``null``); other values as given."""
    if not isinstance(value, str) or kind in ("str", "Any"):
        return value
    if kind.endswith(" | None"):
        if value.lower() in ("none", "null"):
            return None
        kind = kind[: -len(" | None")]
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool" and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    except ValueError:
        pass
    raise AmnesiaError(f"{where} {value!r}: expected a {kind}")


def parse_settings(method: type[Method], args: dict):
    """``method.Settings`` from a mapping, each key a field of it (a typo names the nearest one); ``check()`` runs when it has one."""
    fields = {f.name: f for f in dataclasses.fields(method.Settings)}
    values = {}
    for key, value in args.items():
        if key not in fields:
            valid = ", ".join(fields) or "none"
            raise AmnesiaError(f"method_args {key!r}: method {method.name} has no such setting{did_you_mean(key, fields)}; its settings: {valid}")
        kind = fields[key].type if isinstance(fields[key].type, str) else getattr(fields[key].type, "__name__", "Any")
        values[key] = _coerce(value, kind, f"method_args {key}")
    settings = method.Settings(**values)
    if hasattr(settings, "check"):
        settings.check()
    return settings


def no_method_args(method: type[Method], config, fields: str) -> None:
    """For a method whose settings are UnlearnConfig fields: refuse ``method_args`` with one line naming those fields."""
    if getattr(config, "method_args", None):
        raise AmnesiaError(f"method_args {sorted(config.method_args)}: method {method.name} takes its settings from {fields} (unlearn.* / --{fields.split(',')[0].replace('_', '-')} …)")


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` findable by ``cls.name`` (a second class with the same name replaces the first)."""
    if not cls.name or not isinstance(cls.name, str) or not cls.name.replace("_", "").replace("-", "").isalnum():
        raise AmnesiaError(f"{cls.__name__}: a method needs a name of letters, digits, '-' or '_'")
    if cls.reference not in (None, "forget", "retain"):
        raise AmnesiaError(f"method {cls.name}: reference {cls.reference!r}: expected None, 'forget' or 'retain'")
    _registry[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Forget the method registered as ``name`` (tests and notebooks that register one for a while)."""
    _registry.pop(name, None)


def method_names() -> tuple[str, ...]:
    """Every registered method, in the order they registered (the built-ins first)."""
    return tuple(_registry)


def get_method(name: str) -> type[Method]:
    """The method class registered as ``name``; a one-line error with the nearest name otherwise."""
    if name in _registry:
        return _registry[name]
    raise AmnesiaError(f"method {name!r}: unknown{did_you_mean(name, _registry)}; expected one of {', '.join(_registry)}")


def describe_methods() -> str:
    """``name = summary`` of every method, for ``--help``."""
    return "; ".join(f"{name} = {cls.summary}" for name, cls in _registry.items())
