"""bf16 arithmetic: is it native (and fast) on a device, and an exact emulation where it is not.

``precision="bf16"`` runs convolutions and matrix products on bf16 operands with float32 accumulation and a
bf16 result (autocast, :func:`tangentlens.jvp`). Where that arithmetic is native (CUDA from Ampere on; CPUs
whose oneDNN has bf16 kernels: AVX-512 BF16 / AMX, Arm BF16) it is the fast path. Elsewhere torch falls
back to generic bf16 kernels that are far slower than float32 (measured on an AVX2-only CPU: a VGG-sized
bf16 convolution 10-90x slower, a whole exact-mode PPL sample 32x slower).

:func:`emulate_bf16` computes the same numbers at float32 speed there: a dispatch mode runs every
convolution and matrix product that has a bf16 operand as float32 kernels on the float32 copies of its
operands (exact: bf16 values are float32 values), accumulates in float32, and rounds the result to bf16
(round to nearest even), which is what a native bf16 kernel with float32 accumulation computes; only the
order of the float32 accumulation differs. Elementwise ops and reductions stay as torch runs them in bf16
(float32 math, bf16 storage). The mode sits below autograd and torch.func, so it also sees the products of
forward-mode tangents and of vmapped batches.

:func:`auto_precision` is the decision ``precision="auto"`` takes: bf16 where it is native and a measured
probe (one convolution at StyleGAN/VGG sizes) runs at least ``AUTO_MIN_SPEEDUP`` times faster than
float32, float32 otherwise; it returns the reason, which the results record.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = [
    "AUTO_MIN_SPEEDUP",
    "auto_precision",
    "bf16_speedup",
    "cpu_bf16_flags",
    "emulate_bf16",
    "native_bf16",
]

#: ``precision="auto"`` picks bf16 only where the probe convolution runs at least this much faster than fp32
AUTO_MIN_SPEEDUP = 1.25
# the CPU flags of native bf16 arithmetic (x86: dot products / tile products; Arm: the BF16 extension)
_NATIVE_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")

_aten = torch.ops.aten
# the ops whose bf16 operands a native kernel multiplies with float32 accumulation
_PRODUCTS = (
    _aten.convolution.default,
    _aten.mm.default,
    _aten.bmm.default,
    _aten.addmm.default,
    _aten.baddbmm.default,
    _aten.addbmm.default,
    _aten.mv.default,
    _aten.dot.default,
)


@functools.cache
def cpu_bf16_flags() -> tuple[str, ...]:
    """The native-bf16 flags this CPU reports in ``/proc/cpuinfo`` (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return tuple(flag for flag in _NATIVE_FLAGS if flag in have)
    except OSError:
        pass
    return ()


def native_bf16(device: torch.device | str) -> bool:
    """Whether torch has native bf16 kernels on ``device``: a CUDA device with bf16 tensor cores
    (compute capability >= 8.0), or a CPU whose oneDNN runs bf16 convolutions (without them torch's bf16
    convolutions and matrix products take slow generic kernels)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def _time_conv(dtype: torch.dtype, device: torch.device, repeats: int) -> float:
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(4, 128, 32, 32, generator=g).to(device, dtype)
    w = torch.randn(128, 128, 3, 3, generator=g).to(device, dtype) * 0.03
    if device.type == "cpu":  # oneDNN's fast layout (the LPIPS trunk runs in it on the CPU)
        x, w = (t.contiguous(memory_format=torch.channels_last) for t in (x, w))
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            F.conv2d(x, w, padding=1)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i > 0:  # the first call sets the kernel up
                times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


@functools.cache
def _speedup(device: torch.device) -> float:
    # interleaved, so that load from other processes hits both alike
    t32, t16 = [], []
    for _ in range(3):
        t32.append(_time_conv(torch.float32, device, 1))
        t16.append(_time_conv(torch.bfloat16, device, 1))
    return sorted(t32)[1] / sorted(t16)[1]


def bf16_speedup(device: torch.device | str) -> float:
    """float32 time / bf16 time of a 3x3 convolution, 4 x 128 x 32² (measured once per process and
    device; about 0.1 s on a CPU). Only meaningful where :func:`native_bf16` holds."""
    return _speedup(torch.device(device))


def auto_precision(device: torch.device | str) -> tuple[str, str]:
    """``("bf16" | "fp32", reason)``: bf16 where it is native on ``device`` and measures at least
    ``AUTO_MIN_SPEEDUP`` times faster than float32."""
    device = torch.device(device)
    if device.type == "cuda":
        if not native_bf16(device):
            return "fp32", "cuda: no bf16 tensor cores (compute capability < 8.0)"
        return "bf16", f"cuda: bf16 tensor cores ({torch.cuda.get_device_name(device)})"
    if device.type != "cpu":
        return "fp32", f"{device.type}: bf16 speed not known here"
    cpu = f"cpu ({torch.backends.cpu.get_cpu_capability()})"
    if not native_bf16(device):
        flags = ", ".join(cpu_bf16_flags()) or "none of " + ", ".join(_NATIVE_FLAGS)
        return "fp32", f"{cpu}: no native bf16 kernels (oneDNN bf16 unavailable; CPU flags: {flags})"
    speedup = bf16_speedup(device)
    if speedup < AUTO_MIN_SPEEDUP:
        return "fp32", f"{cpu}: native bf16, but a probe convolution ran only x{speedup:.2f} float32's speed"
    return "bf16", f"{cpu}: native bf16, a probe convolution ran x{speedup:.2f} float32's speed"


def _upcast(x: object) -> object:
    return x.float() if isinstance(x, torch.Tensor) and x.dtype == torch.bfloat16 else x


def _downcast(x: object) -> object:
    return x.to(torch.bfloat16) if isinstance(x, torch.Tensor) and x.dtype == torch.float32 else x


class _BF16Mode(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in _PRODUCTS and any(isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 for a in args):
            out = func(*(_upcast(a) for a in args), **{k: _upcast(v) for k, v in kwargs.items()})
            return _downcast(out)
        return func(*args, **kwargs)


@contextmanager
def emulate_bf16() -> Iterator[None]:
    """Within the block, convolutions and matrix products with bf16 operands run as float32 kernels on
    their (exact) float32 values with a bf16-rounded result: native bf16's numbers at float32's speed."""
    with _BF16Mode():
        yield
