"""Argument checks shared by every module (the Python side of ``csrc/include/tangentlens/checks.h``).

Each check returns the checked value (converted where that is lossless) or raises with a message that names
the argument, says what was expected and what came: ``"batch_size: expected an int >= 1, got 0"``. A value
of the wrong type raises :class:`ArgumentTypeError`, which is both a ``TypeError`` and a ``ValueError``, so
callers may catch either.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar

import torch

__all__ = [
    "ArgumentTypeError",
    "U64",
    "check_bool",
    "check_choice",
    "check_count",
    "check_float_dtype",
    "check_int",
    "check_number",
    "check_positive",
    "check_tensor",
    "check_u64",
    "check_u64_range",
    "describe",
    "nonfinite_rows",
]

U64 = 1 << 64
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
T = TypeVar("T")


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (a ``TypeError`` that ``except ValueError`` also catches)."""


def describe(value: object) -> str:
    """How a value is shown in a message: tensors by shape and dtype, other values by repr (shortened)."""
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(value: object, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """An int (not a bool) in ``[lo, hi]`` (either bound may be None)."""
    if lo is None and hi is None:
        want = "an int"
    elif hi is None:
        want = "a non-negative int" if lo == 0 else f"an int >= {lo}"
    elif lo is None:
        want = f"an int <= {hi}"
    else:
        want = f"an int in [{lo}, {hi}]"
    if not _is_int(value):
        raise ArgumentTypeError(f"{name}: expected {want}, got {describe(value)}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):  # type: ignore[operator]
        raise ValueError(f"{name}: expected {want}, got {value!r}")
    return value  # type: ignore[return-value]


def check_count(value: object, name: str) -> int:
    """A non-negative int."""
    return check_int(value, name, 0)


def check_u64(value: object, name: str) -> int:
    """An int in [0, 2^64): seeds and sample indices are unsigned 64-bit counters."""
    if not _is_int(value):
        raise ArgumentTypeError(f"{name}: expected an int in [0, 2**64), got {describe(value)}")
    if not 0 <= value < U64:  # type: ignore[operator]
        raise ValueError(f"{name}: expected an int in [0, 2**64), got {value}")
    return value  # type: ignore[return-value]


def check_u64_range(start: int, count: int, what: str = "start + count") -> None:
    """Indices ``start .. start + count - 1`` fit the 64-bit counter (past 2^64 they would wrap to 0)."""
    if count > 0 and start + count > U64:
        raise ValueError(
            f"{what}: expected at most 2**64 (sample indices are 64-bit counters), got start {start} and "
            f"count {count} (the last index would be {start + count - 1})"
        )


def check_number(
    value: object,
    name: str,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """A finite real number (int or float, not a bool) in the interval given by ``lo``/``hi``."""
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    if lo is None and hi is None:
        want = "a finite number"
    else:
        low = "-inf" if lo is None else f"{lo:g}"
        high = "inf" if hi is None else f"{hi:g}"
        want = f"a number in {left}{low}, {high}{right}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(f"{name}: expected {want}, got {describe(value)}")
    v = float(value)
    bad = not math.isfinite(v)
    if lo is not None:
        bad = bad or v < lo or (lo_open and v == lo)
    if hi is not None:
        bad = bad or v > hi or (hi_open and v == hi)
    if bad:
        raise ValueError(f"{name}: expected {want}, got {value!r}")
    return v


def check_positive(value: object, name: str) -> float:
    """A positive finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(f"{name}: expected a positive finite number, got {describe(value)}")
    if not 0 < float(value) < math.inf:
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
    return float(value)


def check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise ArgumentTypeError(f"{name}: expected True or False, got {describe(value)}")
    return value


def check_choice(value: T, name: str, choices: Sequence[Any]) -> T:
    """One of ``choices`` (compared with ``==``; unhashable values are simply not in it)."""
    try:
        ok = value in choices
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(
            f"{name}: expected one of {', '.join(repr(c) for c in choices)}, got {describe(value)}"
        )
    return value


def check_float_dtype(dtype: object, name: str = "dtype") -> torch.dtype:
    if dtype not in FLOAT_DTYPES:
        raise ArgumentTypeError(f"{name}: expected one of float16, bfloat16, float32, float64, got {dtype}")
    return dtype  # type: ignore[return-value]


def check_tensor(
    x: object,
    name: str,
    *,
    ndim: int | None = None,
    shape: str | None = None,
    floating: bool = False,
    finite: bool = False,
) -> torch.Tensor:
    """A tensor, with ``ndim`` dims (``shape`` describes them in the message, e.g. ``"[N, z_dim]"``), of a
    floating dtype, with finite values (NaN and inf named, with the first offending rows)."""
    want = f"a tensor {shape}" if shape else "a tensor"
    if not isinstance(x, torch.Tensor):
        raise ArgumentTypeError(f"{name}: expected {want}, got {type(x).__name__}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name}: expected {want} ({ndim} dims), got shape {tuple(x.shape)}")
    if floating and not x.is_floating_point():
        raise ArgumentTypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    if finite and x.is_floating_point():
        msg = nonfinite_rows(x, name)
        if msg is not None:
            raise ValueError(msg)
    return x


def nonfinite_rows(x: torch.Tensor, name: str, first_index: int = 0, what: str = "rows") -> str | None:
    """None when every value of x is finite; else a message naming NaN and/or inf and the first rows (row
    ``i`` reported as ``first_index + i``) holding them."""
    if not x.is_floating_point() and not x.is_complex():
        return None
    flat = x.detach().reshape(x.shape[0], -1) if x.dim() > 0 else x.detach().reshape(1, 1)
    nan = torch.isnan(flat).any(dim=1)
    inf = torch.isinf(flat).any(dim=1)
    bad = nan | inf
    if not bool(bad.any()):
        return None
    kinds = " and ".join(k for k, m in (("NaN", nan), ("inf", inf)) if bool(m.any()))
    idx = (torch.nonzero(bad).flatten() + first_index).tolist()
    more = f" ... ({len(idx)} in all)" if len(idx) > 20 else ""
    return f"{name}: {kinds} values at {what} {idx[:20]}{more}"
