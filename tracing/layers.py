"""``layers.json``: the tracer's layer selection, the unlearning stage's input.

Schema (version 1)::

    {
      "schema": 1,
      "kind": "mlp",                 # module kind the layers were selected for: mlp | attn | hidden
      "layers": [0, 1, 2, 3, 4, 5],  # sorted, unique, 0-based
      "method": "window",            # how they were chosen: window | threshold | fixed | random | ...
      "scores": [0.12, 0.3, ...],    # per-layer score used for the choice (one per model layer)
      "n_facts": 87,                 # facts the scores average over
      "model": "path/or/hub-id",     # the traced model
      "n_layers": 16,                # layers of that model
      "params": {...}                # the selection's own parameters (k, fraction, token group, ...)
    }
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import AmnesiaError
from .io import write_json

SCHEMA = 1
KINDS = ("mlp", "attn", "hidden")


@dataclass
class LayerSelection:
    """Which layers to edit, and why."""

    kind: str
    layers: list[int]
    method: str
    scores: list[float] = field(default_factory=list)
    n_facts: int = 0
    model: str = ""
    n_layers: int | None = None
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.layers = sorted(set(int(l) for l in self.layers))
        if self.kind not in KINDS:
            raise AmnesiaError(f"layer selection kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        if not self.layers:
            raise AmnesiaError("layer selection has no layers")
        if self.layers[0] < 0 or (self.n_layers is not None and self.layers[-1] >= self.n_layers):
            raise AmnesiaError(f"layers {self.layers}: out of range for a model with {self.n_layers} layers (0..{(self.n_layers or 1) - 1})")

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, **asdict(self)}

    def save(self, path: str | Path) -> Path:
        """Write ``layers.json`` atomically."""
        return write_json(path, self.to_dict())


def load_layers(path: str | Path) -> LayerSelection:
    """Read and validate a ``layers.json`` written by ``amnesia trace`` (or by hand)."""
    path = Path(path)
    if not path.is_file():
        raise AmnesiaError(f"{path}: layers file does not exist (expected a layers.json from `amnesia trace`)")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AmnesiaError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise AmnesiaError(f"{path}: expected a JSON object with 'kind' and 'layers'")
    if obj.get("schema", SCHEMA) != SCHEMA:
        raise AmnesiaError(f"{path}: schema {obj.get('schema')!r} is not supported (expected {SCHEMA})")
    for key in ("kind", "layers"):
        if key not in obj:
            raise AmnesiaError(f"{path}: missing field {key!r} (expected kind, layers, method, scores, n_facts, model)")
    layers = obj["layers"]
    if not isinstance(layers, list) or not all(isinstance(l, int) and not isinstance(l, bool) for l in layers):
        raise AmnesiaError(f"{path}: field 'layers' must be a list of integers, got {layers!r}")
    try:
        return LayerSelection(
            kind=obj["kind"],
            layers=layers,
            method=str(obj.get("method", "given")),
            scores=list(obj.get("scores", [])),
            n_facts=int(obj.get("n_facts", 0)),
            model=str(obj.get("model", "")),
            n_layers=obj.get("n_layers"),
            params=dict(obj.get("params", {})),
        )
    except AmnesiaError as exc:
        raise AmnesiaError(f"{path}: {exc}") from None
