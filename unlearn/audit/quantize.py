"""Quantization attacks: the model's weights after a round trip through a quantized format.

Zhang et al. 2024 ("Catastrophic Failure of LLM Unlearning via Quantization", ICLR 2025): small,
constrained unlearning updates do not cross quantization buckets, so the quantized unlearned
model can be the quantized *target* again. Each scheme here quantizes every ``nn.Linear`` weight of
the decoder layers with a maintained library's own functions and writes the dequantized values
back (the embeddings and the output head stay, as bitsandbytes' ``load_in_4bit/8bit`` and GPTQ
leave them); the model then runs in its own dtype. The weights are exactly what the quantized
kernels multiply with, so the forget metrics read back are the quantized model's; what differs is
only the activations' arithmetic (the kernels' bf16/fp16 products), which the ``bf16`` scheme
measures on its own.

* ``bf16``: every floating-point parameter cast to bfloat16 and back (the model re-loaded in bf16).
* ``int8``: bitsandbytes' LLM.int8 weight format (``int8_vectorwise_quant``: per output row,
  absmax scaled to ±127), what ``load_in_8bit`` stores.
* ``nf4``: bitsandbytes' 4-bit NormalFloat, blocks of 64 (``quantize_4bit``'s and ``load_in_4bit``'s
  default). The weight is passed flattened: bitsandbytes 0.50's CPU path mis-quantizes 2-D
  inputs with blocks of 64 or more (measured: half the levels missing); flattened it matches the
  NF4 code book block by block (``tests/test_audit.py`` checks it against a hand computation).
* ``int4``: round-to-nearest asymmetric 4-bit integers (0..15 with a zero point), groups of 128
  input columns (GPTQ's and torchao's ``Int4WeightOnlyConfig`` default; fewer when a layer is
  narrower), through torchao's ``quantize_affine``/``dequantize_affine``.
"""

from __future__ import annotations

import logging
import math

from tracing.errors import AmnesiaError
from tracing.logs import quiet_loggers

SCHEMES = ("bf16", "int8", "nf4", "int4")
NF4_BLOCK = 64
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
        F = _bnb()
        q, row_absmax, _ = F.int8_vectorwise_quant(w)
        return q.float() * (row_absmax.float()[:, None] / 127.0)
    if scheme == "nf4":
        F = _bnb()
        flat = w.reshape(-1)
        q, state = F.quantize_4bit(flat, blocksize=NF4_BLOCK, quant_type="nf4")
        return F.dequantize_4bit(q, state).float().reshape(w.shape)
    if scheme == "int4":
        MappingType, choose_qparams_affine, dequantize_affine, quantize_affine = _torchao_affine()
        block = (1, int4_group(w.shape[1]))
        scale, zero = choose_qparams_affine(w, MappingType.ASYMMETRIC, block, torch.int32, quant_min=0, quant_max=15, eps=1e-6,
                                            scale_dtype=torch.float32, zero_point_dtype=torch.float32)
        q = quantize_affine(w, block, scale, zero, torch.int32, quant_min=0, quant_max=15)
        return dequantize_affine(q, block, scale, zero, torch.int32, quant_min=0, quant_max=15, output_dtype=torch.float32)
    raise AmnesiaError(f"quantization scheme {scheme!r}: expected one of {', '.join(SCHEMES)}")


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
    library = {"bf16": "torch", "int8": "bitsandbytes", "nf4": "bitsandbytes", "int4": "torchao"}[scheme]
    return {"scheme": scheme, "library": library, "version": _version(library), "tensors": tensors, "parameters": params,
            "mean_abs_change": change / max(params, 1)}


def _bnb():
    """bitsandbytes' functional API, imported without its line about an optional AVX-512 kernel from the Hub (not used here)."""
    with quiet_loggers("bitsandbytes", "bitsandbytes.backends.cpu.ops"):
        import bitsandbytes.functional as F
    return F


def _torchao_affine():
    """torchao's affine quantization primitives, imported without its lines about the CUDA libraries a CPU build cannot load."""
    with quiet_loggers("torchao", "torch.utils._pytree", level=logging.CRITICAL):
        from torchao.quantization.quant_primitives import MappingType, choose_qparams_affine, dequantize_affine, quantize_affine
    return MappingType, choose_qparams_affine, dequantize_affine, quantize_affine


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
