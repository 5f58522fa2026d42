"""Storage dtypes of the index and their per-vector quantization.

Four dtypes are stored (plus float32, handy for exact tests):

| name | torch dtype | bytes per vector | scale |
|---|---|---|---|
| ``bfloat16`` (the paper's) | ``torch.bfloat16`` | ``2 d`` | none |
| ``float16`` | ``torch.float16`` | ``2 d`` | none |
| ``float8_e4m3`` | ``torch.float8_e4m3fn`` | ``d + 4`` | float32, ``amax / 448`` |
| ``int8`` | ``torch.int8`` | ``d + 4`` | float32, ``amax / 127`` |
| ``float32`` | ``torch.float32`` | ``4 d`` | none |

Quantized vectors are ``scale * stored``; each vector (not each tensor) has its own scale, so one
outlier vector does not crush the resolution of the others.

Example:
    >>> import torch
    >>> data, scale = quantize(torch.tensor([[0.5, -1.0, 0.25]]), "int8")
    >>> data.tolist(), round(float(scale[0]) * 127, 6)
    ([[64, -127, 32]], 1.0)
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "SAFETENSORS_DTYPES",
    "STORAGE_DTYPES",
    "bytes_per_vector",
    "canonical_dtype",
    "dequantize",
    "is_quantized",
    "quantize",
]

STORAGE_DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float8_e4m3": torch.float8_e4m3fn,
    "int8": torch.int8,
    "float32": torch.float32,
}
"""Canonical storage dtype names and the torch dtype each is stored as."""

SAFETENSORS_DTYPES: dict[str, str] = {
    "bfloat16": "BF16",
    "float16": "F16",
    "float8_e4m3": "F8_E4M3",
    "int8": "I8",
    "float32": "F32",
}
"""The safetensors dtype code of each storage dtype."""

_ALIASES = {
    "bf16": "bfloat16",
    "fp16": "float16",
    "half": "float16",
    "fp8": "float8_e4m3",
    "fp8_e4m3": "float8_e4m3",
    "e4m3": "float8_e4m3",
    "float8_e4m3fn": "float8_e4m3",
    "fp32": "float32",
    "float": "float32",
}
_QUANT_MAX = {"int8": 127.0, "float8_e4m3": float(torch.finfo(torch.float8_e4m3fn).max)}


def canonical_dtype(dtype: str | torch.dtype) -> str:
    """Returns the canonical storage dtype name for a name, alias or torch dtype.

    Raises:
        ValueError: If the dtype is not one the index stores.

    Example:
        >>> canonical_dtype("bf16"), canonical_dtype(torch.float8_e4m3fn)
        ('bfloat16', 'float8_e4m3')
    """
    if isinstance(dtype, torch.dtype):
        for name, torch_dtype in STORAGE_DTYPES.items():
            if torch_dtype == dtype:
                return name
        raise ValueError(f"The index cannot store {dtype}; choose one of {sorted(STORAGE_DTYPES)}.")
    name = str(dtype).lower().removeprefix("torch.")
    name = _ALIASES.get(name, name)
    if name not in STORAGE_DTYPES:
        raise ValueError(f"Unknown index dtype {dtype!r}; choose one of {sorted(STORAGE_DTYPES)}.")
    return name


def is_quantized(dtype: str | torch.dtype) -> bool:
    """Whether the dtype stores a per-vector float32 scale next to its values."""
    return canonical_dtype(dtype) in _QUANT_MAX


def bytes_per_vector(dtype: str | torch.dtype, dim: int) -> int:
    """Exact bytes one stored vector takes, its scale included.

    Example:
        >>> bytes_per_vector("bfloat16", 2048), bytes_per_vector("int8", 2048)
        (4096, 2052)
    """
    name = canonical_dtype(dtype)
    itemsize = torch.empty((), dtype=STORAGE_DTYPES[name]).element_size()
    return dim * itemsize + (4 if name in _QUANT_MAX else 0)


def quantize(vectors: Tensor, dtype: str | torch.dtype) -> tuple[Tensor, Tensor | None]:
    """Converts float vectors ``[..., d]`` to a storage dtype.

    Args:
        vectors: Floating point vectors, any leading shape.
        dtype: Storage dtype name (see :data:`STORAGE_DTYPES`).

    Returns:
        ``(data, scales)``: ``data`` in the storage dtype with the input's shape, and float32
        ``scales [...]`` (one per vector) for int8 / float8, else None.
    """
    name = canonical_dtype(dtype)
    torch_dtype = STORAGE_DTYPES[name]
    if name not in _QUANT_MAX:
        return vectors.to(torch_dtype), None
    top = _QUANT_MAX[name]
    values = vectors.to(torch.float32)
    amax = values.abs().amax(dim=-1)
    scales = torch.where(amax > 0, amax / top, torch.ones_like(amax))
    scaled = (values / scales.unsqueeze(-1)).clamp_(-top, top)
    if name == "int8":
        scaled = scaled.round_()
    return scaled.to(torch_dtype), scales


def dequantize(data: Tensor, scales: Tensor | None) -> Tensor:
    """Returns stored vectors as float32 (``scale * value`` for quantized dtypes).

    Example:
        >>> data, scales = quantize(torch.tensor([[0.5, -1.0]]), "float8_e4m3")
        >>> dequantize(data, scales).tolist()
        [[0.5, -1.0]]
    """
    values = data.to(torch.float32)
    if scales is not None:
        values = values * scales.to(values.device, torch.float32).unsqueeze(-1)
    return values
