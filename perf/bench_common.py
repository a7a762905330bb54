"""Helpers the newer benchmark scripts share: random OLMo models from a real config, the shared data, the machine.

Nothing here downloads anything: models are built from a ``config.json`` (``model_configs/``)
with random weights, the tokenizer and data come from ``../shared`` (or ``$AMNESIA_SHARED``).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AMNESIA_SHARED", ROOT.parent / "shared"))
CONFIGS = ROOT / "perf" / "model_configs"
OLMO_1B = CONFIGS / "olmo-1b-0724.json"
OLMO_7B = CONFIGS / "olmo-7b-0724-instruct.json"
TOKENIZER = SHARED / "tokenizers" / "olmo-0724"
SEMEVAL = SHARED / "data" / "semeval25"
MMLU = SHARED / "data" / "mmlu_no_train"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def olmo_config(path: str | Path = OLMO_1B, *, layers: int | None = None, hidden: int | None = None, heads: int | None = None, vocab: int | None = None, max_positions: int | None = None):
    """An ``OlmoConfig`` from a HF ``config.json``, optionally shrunk.

    ``hidden`` keeps the config's MLP/hidden ratio (8192/2048 = 4 for OLMo-1B) and its head size
    where that divides (else ``heads`` or 4 heads); ``layers`` replaces the layer count.
    """
    from transformers import OlmoConfig

    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    raw = {k: v for k, v in raw.items() if k not in ("architectures", "model_type", "torch_dtype", "transformers_version")}
    if hidden:
        ratio = raw["intermediate_size"] / raw["hidden_size"]
        head_dim = raw["hidden_size"] // raw["num_attention_heads"]
        n_heads = heads or (hidden // head_dim if hidden % head_dim == 0 and hidden >= head_dim else 4)
        raw.update(hidden_size=hidden, intermediate_size=int(round(hidden * ratio)), num_attention_heads=n_heads, num_key_value_heads=n_heads)
    elif heads:
        raw.update(num_attention_heads=heads, num_key_value_heads=heads)
    if layers:
        raw["num_hidden_layers"] = layers
    if vocab:
        raw["vocab_size"] = vocab
    if max_positions:
        raw["max_position_embeddings"] = max_positions
    return OlmoConfig(**raw)


def random_olmo(config, *, seed: int = 0, dtype=None, device: str = "cpu"):
    """A randomly initialised ``OlmoForCausalLM`` (seeded), on ``device`` in ``dtype``."""
    import torch
    from transformers import OlmoForCausalLM

    torch.manual_seed(seed)
    if device.startswith("cuda"):
        with torch.device(device):  # initialise on the GPU: no multi-GB host copy
            model = OlmoForCausalLM(config)
    else:
        model = OlmoForCausalLM(config)
    if dtype is not None:
        model.to(dtype)
    return model


def count_parameters(config) -> tuple[int, dict[str, int]]:
    """Total parameters of an OLMo config and the share of each part, without allocating (meta device)."""
    import torch
    from transformers import OlmoForCausalLM

    with torch.device("meta"):
        model = OlmoForCausalLM(config)
    parts = {"embed": 0, "lm_head": 0, "attn": 0, "mlp": 0, "other": 0}
    for name, p in model.named_parameters():
        key = "embed" if "embed_tokens" in name else "lm_head" if "lm_head" in name else "attn" if "self_attn" in name else "mlp" if ".mlp." in name else "other"
        parts[key] += p.numel()
    return sum(parts.values()), parts


def olmo_tokenizer(path: str | Path = TOKENIZER):
    from unlearn.models import load_tokenizer

    if not Path(path).is_dir():
        raise SystemExit(f"{path}: the OLMo-0724 tokenizer folder is missing (expected ../shared/tokenizers/olmo-0724 or $AMNESIA_SHARED)")
    return load_tokenizer(path)


def rss_bytes() -> int:
    """The current resident set size (Linux /proc; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def machine(device: str = "cpu") -> dict:
    """Where the numbers come from: CPU, cores, threads, load, GPU, versions."""
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return info


def describe(info: dict) -> str:
    where = info.get("gpu") or f"{info['cpu']} ({info['cores']} cores, {info['threads']} threads)"
    load = f", load average {info['load_average'][0]}" if info.get("load_average") else ""
    return f"{where}, torch {info['torch']}, transformers {info['transformers']}{load}"


def emit(figures: dict, json_out: str | None = None) -> int:
    """End a benchmark: write ``figures`` to ``json_out`` (when given) and print them as the last line."""
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(figures))
    return 0


def last_json_line(text: str) -> dict:
    """The last line of ``text`` that parses as a JSON object."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON line in the output")


def fixture(cache: Path) -> tuple[Path, Path]:
    """The synthetic world and the tiny target that memorized it (built once into ``cache``)."""
    from pipelines.target import TargetConfig, make_target
    from pipelines.world import WorldConfig, make_world

    world, target = cache / "world", cache / "target"
    if not (world / "world.json").exists():
        make_world(world, WorldConfig(people=40, seed=0), overwrite=True)
    if not (target / "target.json").exists():
        print(f"building the tiny target in {target} (about two minutes on 2 cores) ...", flush=True)
        make_target(world, target, TargetConfig(seed=0), overwrite=True, device="cpu", progress=False)
    return world, target


def add_fixture_arguments(p, cache: str, data_help: str) -> None:
    """``--model``, ``--data`` and ``--cache``: a user's model and data, or the fixture built in ``--cache``."""
    p.add_argument("--model", help="model folder; default: the tiny target built in --cache")
    p.add_argument("--data", help=f"{data_help}; default: the world built in --cache")
    p.add_argument("--cache", default=cache, help="where the default world and target are built once")


def fixture_paths(args) -> tuple[Path, Path]:
    """``(data, model)``: ``--data`` and ``--model`` when both are given, else :func:`fixture` in ``--cache``."""
    if args.model and args.data:
        return Path(args.data), Path(args.model)
    return fixture(Path(args.cache))
