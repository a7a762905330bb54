"""layers.json: round trip and validation."""

from __future__ import annotations

import json

import pytest

from tracing.errors import AmnesiaError
from tracing.layers import LayerSelection, load_layers


def test_round_trip(tmp_path):
    sel = LayerSelection(kind="mlp", layers=[3, 1, 2, 2], method="window", scores=[0.1, 0.5, 0.4, 0.3], n_facts=5, model="m", n_layers=4)
    path = sel.save(tmp_path / "layers.json")
    back = load_layers(path)
    assert back.layers == [1, 2, 3] and back.kind == "mlp" and back.n_layers == 4
    assert json.loads(path.read_text())["schema"] == 1


@pytest.mark.parametrize(
    "content, match",
    [
        ("{", "not valid JSON"),
        ('{"kind": "mlp"}', "missing field 'layers'"),
        ('{"kind": "mlp", "layers": ["a"]}', "must be a list of integers"),
        ('{"kind": "ffn", "layers": [1]}', "kind 'ffn': expected one of mlp, attn, hidden"),
        ('{"kind": "mlp", "layers": [7], "n_layers": 6}', r"out of range for a model with 6 layers"),
        ('{"kind": "mlp", "layers": []}', "has no layers"),
    ],
)
def test_bad_layers_files(tmp_path, content, match):
    path = tmp_path / "layers.json"
    path.write_text(content)
    with pytest.raises(AmnesiaError, match=match):
        load_layers(path)
    with pytest.raises(AmnesiaError, match="does not exist"):
        load_layers(tmp_path / "none.json")
