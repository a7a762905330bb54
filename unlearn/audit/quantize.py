"""Quantization attacks: the model's weights after a round trip through a quantized format.

Zhang et al. 2024 ("Catastrophic Failure of LLM Unlearning via Quantization", ICLR 2025): small,
constrained unlearning updates do not cross quantization buckets, so the quantized unlearned
model can be the quantized *target* again. Each scheme quantizes every ``nn.Linear`` weight of
the decoder layers with torchao's functions and writes the dequantized values back (the
embeddings and the output head stay, as bitsandbytes' ``load_in_4bit/8bit`` and GPTQ leave
them); the model then runs in its own dtype. The weights are exactly what the quantized kernels
multiply with, so the forget metrics read back are the quantized model's; what differs is only
the activations' arithmetic (the kernels' bf16/fp16 products), which ``bf16`` measures alone.

* ``bf16``: every floating-point parameter cast to bfloat16 and back (the model re-loaded in bf16).
* ``int8``: symmetric 8-bit integers per output row, absmax scaled to ±127 (LLM.int8's weight
  format, what ``load_in_8bit`` stores; torchao's ``Int8WeightOnlyConfig``).
* ``nf4``: 4-bit NormalFloat in blocks of 64 with double-quantized block scales (QLoRA's
  setting; torchao's ``to_nf4``, scales in blocks of 256, fewer when a tensor is smaller).
* ``int4``: round-to-nearest asymmetric 4-bit integers (0..15 with a zero point) in groups of
  128 input columns (GPTQ's and torchao's ``Int4WeightOnlyConfig`` group size; fewer when a layer
  is narrower).

Why torchao (measured on this 2-core CPU, 2026-12-07): bitsandbytes 0.50.2 runs on a CPU, but its
CPU path quantizes 2-D NF4 inputs with blocks of 64 or more wrongly (half the levels missing,
errors up to half a block's range), and importing it reaches for an AVX-512 kernel on the Hub
(and prints about it) — in every command, since peft and transformers import it when installed.
torchao's primitives are plain torch and run the same on CPU and GPU.
"""

from __future__ import annotations

import logging
import math

from tracing.errors import AmnesiaError
from tracing.logs import quiet_loggers

SCHEMES = ("bf16", "int8", "nf4", "int4")
NF4_BLOCK = 64
NF4_SCALER_BLOCK = 256
INT4_GROUP = 128


def int4_group(columns: int, group: int = INT4_GROUP) -> int:
    """The group size for a layer with ``columns`` inputs: ``group`` when it divides them, else their greatest common divisor."""
    return group if columns % group == 0 else math.gcd(columns, group)


def roundtrip(weight, scheme: str):
    """``weight`` (a 2-D float tensor) quantized with ``scheme`` and dequantized, in float32."""
    import torch

    w = weight.detach().float().contiguous()
    if scheme == "bf16":
        return w.to(torch.bfloat16).float()
    if scheme == "int8":
        return _affine(w, (1, w.shape[1]), -127, 127, symmetric=True)
    if scheme == "int4":
        return _affine(w, (1, int4_group(w.shape[1])), 0, 15, symmetric=False)
    if scheme == "nf4":
        if w.numel() % NF4_BLOCK:
            raise AmnesiaError(f"nf4: a weight of {w.numel()} values is not a whole number of blocks of {NF4_BLOCK}")
        to_nf4 = _torchao("to_nf4")
        blocks = w.numel() // NF4_BLOCK
        return to_nf4(w, block_size=NF4_BLOCK, scaler_block_size=math.gcd(blocks, NF4_SCALER_BLOCK)).get_original_weight().float()
    raise AmnesiaError(f"quantization scheme {scheme!r}: expected one of {', '.join(SCHEMES)}")


def _affine(w, block: tuple[int, int], qmin: int, qmax: int, *, symmetric: bool):
    """torchao's affine round trip of ``w`` with one scale (and zero point) per ``block``."""
    import torch

    MappingType, choose, quantize, dequantize = (_torchao(n) for n in ("MappingType", "choose_qparams_affine", "quantize_affine", "dequantize_affine"))
    mapping = MappingType.SYMMETRIC if symmetric else MappingType.ASYMMETRIC
    scale, zero = choose(w, mapping, block, torch.int32, quant_min=qmin, quant_max=qmax, eps=1e-6,
                         scale_dtype=torch.float32, zero_point_dtype=torch.float32 if not symmetric else torch.int32)
    q = quantize(w, block, scale, zero, torch.int32, quant_min=qmin, quant_max=qmax)
    return dequantize(q, block, scale, zero, torch.int32, quant_min=qmin, quant_max=qmax, output_dtype=torch.float32)


def quantize_model(model, scheme: str) -> dict:
    """Quantize ``model`` in place with ``scheme`` (see the module docstring); returns what was done:
    the library, how many tensors and parameters it touched, and the mean |change| of a weight."""
    import torch

    from ..params import find_decoder_layers

    if scheme not in SCHEMES:
        raise AmnesiaError(f"quantization scheme {scheme!r}: expected one of {', '.join(SCHEMES)}")
    tensors = params = 0
    change = 0.0
    with torch.no_grad():
        if scheme == "bf16":
            targets = [p for p in model.parameters() if p.is_floating_point()]
        else:
            _, layers = find_decoder_layers(model)
            targets = [m.weight for m in layers.modules() if isinstance(m, torch.nn.Linear)]
        for p in targets:
            new = roundtrip(p, scheme).to(p.dtype)
            change += (new.float() - p.float()).abs().sum().item()
            p.copy_(new)
            tensors += 1
            params += p.numel()
    library = "torch" if scheme == "bf16" else "torchao"
    return {"scheme": scheme, "library": library, "version": _version(library), "tensors": tensors, "parameters": params,
            "mean_abs_change": change / max(params, 1)}


def _torchao(name: str):
    """One of torchao's quantization functions, imported without its log lines about the CUDA libraries a CPU build cannot load."""
    with quiet_loggers("torchao", "torch.utils._pytree", level=logging.CRITICAL):
        if name == "to_nf4":
            from torchao.quantization.quantize_.workflows.nf4.nf4_tensor import to_nf4

            return to_nf4
        from torchao.quantization import quant_primitives

        return getattr(quant_primitives, name)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
