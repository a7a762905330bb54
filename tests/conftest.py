"""Shared fixtures: the ../shared data (skip or fail) and the tiny target model built once per run.

The fixture world + target (40 people, 6-layer OLMo) is built by the project's own
``make_world`` / ``make_target`` and cached in pytest's cache folder, keyed by a hash of the
code that builds it, so a rerun with unchanged code reuses it and a clean clone builds it anew.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AMNESIA_SHARED", ROOT.parent / "shared"))
FIXTURE_PEOPLE = 40


def shared_path(*parts: str) -> Path:
    """A path under ../shared; skips the test when absent, fails under AMNESIA_REQUIRE_SHARED=1."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"{path} not found: the shared data (../shared beside the checkout) is needed for this test"
        if os.environ.get("AMNESIA_REQUIRE_SHARED") == "1":
            pytest.fail(message + " and AMNESIA_REQUIRE_SHARED=1")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def semeval_dir() -> Path:
    return shared_path("data", "semeval25")


@pytest.fixture(scope="session")
def olmo_tokenizer_dir() -> Path:
    return shared_path("tokenizers", "olmo-0724")


def random_olmo(tokenizer, *, small: bool = False, **config):
    """A randomly initialised OLMo (seed 0, eval mode) over the OLMo tokenizer's vocabulary: 2 layers
    64 wide, or with ``small`` 1 layer 32 wide; ``config`` overrides (e.g. ``max_position_embeddings``)."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    size = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2) if small else \
        dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    return tf.AutoModelForCausalLM.from_config(tf.OlmoConfig(vocab_size=50304, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                                              bos_token_id=None, **{**size, **config})).eval()


@pytest.fixture(scope="session")
def mmlu_dir() -> Path:
    return shared_path("data", "mmlu_no_train")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (tracing tests compare runs whose BLAS kernels depend on the count)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _fixture_key() -> str:
    import torch
    import transformers

    h = hashlib.sha256()
    for rel in ("pipelines/world.py", "pipelines/target.py", "unlearn/data.py", "unlearn/generation.py", "unlearn/batching.py"):
        h.update((ROOT / rel).read_bytes())
    h.update(f"{torch.__version__}|{transformers.__version__}|{FIXTURE_PEOPLE}".encode())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def fixture_world(request) -> Path:
    """The synthetic world the fixture target memorized (40 people, seed 0)."""
    return _build_fixture(request)["world"]


@pytest.fixture(scope="session")
def fixture_target(request) -> Path:
    """A 6-layer, 128-wide OLMo that memorized ``fixture_world``'s train rows."""
    return _build_fixture(request)["target"]


_BUILT: dict[str, Path] = {}


def _say_while_building(request, cache: Path, world: Path, target: Path) -> None:
    """Build the fixture in the open: what it is, make-target's progress bar, how long it took."""
    import time

    from pipelines.target import TargetConfig, make_target
    from pipelines.world import WorldConfig, make_world

    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n[fixture] building the test world ({FIXTURE_PEOPLE} people) and the tiny target that memorizes it, once per change "
              f"of the code that builds them (about 1.5 min on 2 CPU cores), into {cache}", flush=True)
        start = time.perf_counter()
        shutil.rmtree(cache, ignore_errors=True)
        make_world(world, WorldConfig(people=FIXTURE_PEOPLE, seed=0))
        manifest = make_target(world, target, TargetConfig(seed=0), device="cpu", progress=True)
        print(f"[fixture] built in {time.perf_counter() - start:.0f} s ({manifest['steps']} training steps); later runs reuse it", flush=True)


def _build_fixture(request) -> dict[str, Path]:
    if _BUILT:
        return _BUILT
    root = Path(request.config.cache.mkdir("amnesia-fixture"))
    cache = root / _fixture_key()
    world, target = cache / "world", cache / "target"
    with open(root / ".lock", "w") as lock:  # concurrent pytest runs build it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "target.json").exists():
            _say_while_building(request, cache, world, target)
    _BUILT.update(world=world, target=target)
    return _BUILT
