"""One function loads a causal LM and its tokenizer, the same way for every stage.

* a local folder (checked first) or a Hugging Face Hub id;
* ``device``: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``;
* ``dtype``: ``auto`` (bf16 on GPU, fp32 on CPU), ``float32``, ``bfloat16``, ``float16``;
* safetensors only, unless ``allow_pickle=True`` (pickle checkpoints can run code on load);
* ``trust_remote_code`` off unless asked (a local folder that needs its own code is refused
  before any of it runs);
* a pad token: the tokenizer's own, else ``<|padding|>`` when the vocabulary has it (OLMo-0724),
  else EOS.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from tracing.errors import AmnesiaError
from tracing.logs import quiet_loggers

from .config import ModelOptions  # noqa: F401 - part of this module's API
from .hub import check_hub_source

logger = logging.getLogger(__name__)
# The audit's quantization libraries are imported by peft and transformers whenever installed, and
# say so on import: bitsandbytes that an optional AVX-512 4-bit kernel from the Hub did not load,
# torchao that its CUDA libraries did not (and torch's pytree a deprecation aimed at torchao's code).
# Nothing here uses those kernels; the lines would only bury a run's own output.
for _name in ("bitsandbytes.backends.cpu.ops", "torchao", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
WEIGHT_FILES_SAFE = ("model.safetensors", "model.safetensors.index.json")
WEIGHT_FILES_PICKLE = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AmnesiaError(f"--device {device}: CUDA is not available on this machine (use --device cpu or auto)")
    try:
        return torch.device(device)
    except RuntimeError:
        raise AmnesiaError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N") from None


def resolve_dtype(dtype: str = "auto", device: torch.device | str = "cpu") -> torch.dtype:
    """``auto`` → bfloat16 on GPU, float32 on CPU."""
    if dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise AmnesiaError(f"--dtype {dtype!r}: expected auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _check_local_folder(path: Path, allow_pickle: bool, trust_remote_code: bool = False) -> None:
    if not path.is_dir():
        raise AmnesiaError(f"{path}: model path is not a folder (expected a Hugging Face model folder)")
    config = path / "config.json"
    if not config.is_file():
        raise AmnesiaError(f"{path}: no config.json (expected a Hugging Face model folder from save_pretrained)")
    try:
        cfg = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AmnesiaError(f"{config}: not valid JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise AmnesiaError(f"{config}: expected a JSON object (a transformers model config)")
    model_type = cfg.get("model_type")
    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        if not cfg.get("auto_map"):
            raise AmnesiaError(f"{config}: model_type {model_type!r} is not an architecture this transformers version knows")
        if not trust_remote_code:  # (a known model_type with an auto_map loads transformers' own class: no code runs)
            raise AmnesiaError(
                f"{config}: the model needs its own Python code (auto_map), which runs only with "
                "--trust-remote-code; pass it only for a model you trust"
            )
    has_safe = any((path / f).is_file() for f in WEIGHT_FILES_SAFE) or any(path.glob("*.safetensors"))
    has_pickle = any((path / f).is_file() for f in WEIGHT_FILES_PICKLE) or any(path.glob("*.bin"))
    if not has_safe and not has_pickle:
        raise AmnesiaError(f"{path}: no model weights (expected model.safetensors or sharded *.safetensors)")
    if not has_safe and not allow_pickle:
        raise AmnesiaError(
            f"{path}: only pickle weights (pytorch_model.bin), which can run code when loaded; "
            "convert to safetensors or pass --allow-pickle if you trust the file"
        )


def is_local(name_or_path: str | os.PathLike) -> bool:
    """True when the argument names a path on disk (or is written like one)."""
    text = str(name_or_path)
    return Path(text).expanduser().exists() or text.startswith((".", "/", "~")) or text.count("/") > 1


def load_tokenizer(name_or_path: str | os.PathLike, trust_remote_code: bool = False):
    """The tokenizer of a model folder or Hub id, with a pad token guaranteed."""
    from transformers import AutoTokenizer

    if not is_local(name_or_path):
        check_hub_source(str(name_or_path), what="model")  # a mistyped folder fails in seconds, not after a minute of retries
    try:
        tok = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise AmnesiaError(f"{name_or_path}: cannot load a tokenizer ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if not tok("The", add_special_tokens=False)["input_ids"]:  # a folder without tokenizer files gives an empty one
        raise AmnesiaError(f"{name_or_path}: the tokenizer encodes text to nothing (expected tokenizer.json or the tokenizer's vocabulary files beside the model)")
    return ensure_pad_token(tok)


def ensure_pad_token(tok):
    """Set a pad token when the tokenizer has none: ``<|padding|>`` if in the vocabulary, else EOS."""
    if tok.pad_token is None:
        vocab = tok.get_vocab()
        if "<|padding|>" in vocab:
            tok.pad_token = "<|padding|>"
        elif tok.eos_token is not None:
            tok.pad_token = tok.eos_token
        else:
            raise AmnesiaError(f"{tok.name_or_path}: tokenizer has neither a pad nor an EOS token")
    return tok


def load_model(name_or_path: str | os.PathLike, options: ModelOptions = ModelOptions(), *, for_training: bool = False):
    """Load ``(model, tokenizer)`` from a local folder or a Hub id.

    The model is moved to the resolved device and dtype and put in eval mode unless
    ``for_training``. Raises :class:`AmnesiaError` for a path without a model, pickle-only
    weights without ``allow_pickle``, or an architecture transformers does not know.
    """
    from transformers import AutoModelForCausalLM

    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    local = is_local(name_or_path)
    path = Path(str(name_or_path)).expanduser()
    if local:
        if not path.exists():
            raise AmnesiaError(f"{path}: model path does not exist")
        _check_local_folder(path, options.allow_pickle, options.trust_remote_code)
    source = str(path) if local else str(name_or_path)
    tok = load_tokenizer(source, options.trust_remote_code)
    try:
        # transformers reports missing / unexpected weights in a log block and goes on; we decide (below)
        with quiet_loggers("transformers.modeling_utils", "transformers.utils.loading_report"):
            model, info = AutoModelForCausalLM.from_pretrained(
                source,
                dtype=dtype,
                use_safetensors=None if options.allow_pickle else True,
                trust_remote_code=options.trust_remote_code,
                output_loading_info=True,
            )
    except Exception as exc:  # noqa: BLE001 - a truncated file, mismatched shapes, ...: the files are the user's
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise AmnesiaError(f"{source}: cannot load the model ({type(exc).__name__}: {first})") from exc
    mismatch = weight_mismatch(info)
    if mismatch and not options.allow_weight_mismatch:
        raise AmnesiaError(f"{source}: the weights do not match config.json: {mismatch} (a config from another model? pass --allow-weight-mismatch to load it anyway)")
    if mismatch:
        logger.warning("%s: loaded although the weights do not match config.json: %s", source, mismatch)
    model.to(device)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    model.train(for_training)
    return model, tok


def weight_mismatch(info: dict) -> str:
    """What ``from_pretrained``'s loading info says does not match, in a few words ("" when all matches)."""
    parts = []
    for key, what in (("missing_keys", "missing (they would be randomly initialised)"), ("unexpected_keys", "unexpected (they would be ignored)"),
                      ("mismatched_keys", "of another shape")):
        names = sorted(str(k[0] if isinstance(k, tuple) else k) for k in (info.get(key) or []))
        if names:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            parts.append(f"{len(names)} tensor{'s' if len(names) != 1 else ''} {what}: {shown}")
    return "; ".join(parts)


def context_length(model) -> int | None:
    """The most positions the model was built for (``max_position_embeddings`` and its aliases), or None."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_fits_context(model, sequences: Sequence[Sequence[int]], names: Sequence[str], where: str, why: str = "") -> None:
    """One line naming the first of ``sequences`` (token ids, named by ``names``) longer than the model's
    context (:func:`context_length`; none known: nothing checked); ``why`` ends the message."""
    ctx = context_length(model)
    if ctx is None:
        return
    for ids, name in zip(sequences, names):
        if len(ids) > ctx:
            raise AmnesiaError(f"{where}: {name} is {len(ids)} tokens, longer than the model's context of {ctx} (max_position_embeddings){why}")


def model_id(model) -> str:
    """A short identifier for reports: the folder or Hub id the model came from."""
    return str(getattr(model.config, "_name_or_path", "") or getattr(model, "name_or_path", "") or type(model).__name__)
