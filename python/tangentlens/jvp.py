"""Batched multi-tangent JVPs: ``F(z)`` and ``J(z) v`` for k tangents per point, sharing the primal (SPEC 2).

``jvp(fn, primal, tangents)`` runs ``torch.func.jvp`` vmapped over the tangents: one primal pass, and every
op sees all the tangents of a chunk at once (our native forward rules fold them into one launch). k is split
into chunks that fit a memory budget. When an op of ``fn`` has no forward-mode rule the call does not fail
or guess: it retries with the reference implementations of tangentlens' own ops, then falls back to the
double-VJP identity ``J v = d/du <J^T u, v>`` (exact, about two backward passes per tangent), with a warning
that names the ops and submodules concerned. ``coverage(fn, primal)`` produces that report on its own.
"""

from __future__ import annotations

import os
import re
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from tangentlens._extension import Impl, default_impl
from tangentlens.bf16 import emulate_bf16, native_bf16
from tangentlens.tf32 import emulate_tf32

__all__ = ["CoverageReport", "JVPInfo", "Unsupported", "coverage", "jvp"]

Method = Literal["auto", "forward", "double_vjp"]
Precision = Literal["fp32", "tf32", "fp16", "bf16"]
#: the precision names every API takes (jvp, spectra, ppl, cli)
PRECISIONS: tuple[str, ...] = get_args(Precision)

_FWD_AD_MISSING = re.compile(
    r"forward AD with (\S+?) that does not support it|"
    r"Trying to use forward AD with (\S+)"
)


@dataclass
class Unsupported:
    """A submodule (or the whole function, path ``""``) whose forward-mode JVP failed."""

    path: str
    module_type: str
    op: str | None
    error: str


@dataclass
class CoverageReport:
    """What forward mode can differentiate in ``fn`` and what :func:`jvp` will do about the rest."""

    method: Literal["forward", "forward-reference", "double_vjp"]
    unsupported_native: list[Unsupported] = field(default_factory=list)
    unsupported: list[Unsupported] = field(default_factory=list)

    @property
    def fully_supported(self) -> bool:
        return self.method == "forward"

    def __str__(self) -> str:
        def fmt(items: list[Unsupported]) -> list[str]:
            return [f"  {u.path or '<fn>'} ({u.module_type}): {u.op or u.error}" for u in items]

        lines = [f"jvp method: {self.method}"]
        if self.method == "forward-reference":
            lines.append("no forward rule with tangentlens' native ops here; their reference ops are used:")
            lines += fmt(self.unsupported_native)
        elif self.method == "double_vjp":
            lines.append("no forward rule (exact double-VJP fallback) in:")
            lines += fmt(self.unsupported)
        return "\n".join(lines)


@dataclass
class JVPInfo:
    """How a :func:`jvp` call ran (``return_info=True``)."""

    method: str
    chunk_size: int
    num_chunks: int
    precision: str
    report: CoverageReport | None = None
    #: max |J v - J v (fp32)| / max |J v (fp32)| over the cross-checked points (reduced precision only)
    crosscheck_rel_error: float | None = None
    crosscheck_points: int = 0


# ---- shapes ----------------------------------------------------------------------------------------------


def _check_inputs(primal: object, tangents: object) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(primal, torch.Tensor):
        raise TypeError(f"primal: expected a tensor [B, ...], got {type(primal).__name__}")
    if not isinstance(tangents, torch.Tensor):
        raise TypeError(f"tangents: expected a tensor [B, k, ...] or [k, ...], got {type(tangents).__name__}")
    if primal.dim() < 1:
        raise ValueError("primal: expected a batch dimension [B, ...], got a scalar")
    if not primal.is_floating_point():
        raise TypeError(f"primal: expected a floating-point tensor, got {primal.dtype}")
    item = tuple(primal.shape[1:])
    if tuple(tangents.shape[2:]) == item and tangents.dim() == primal.dim() + 1:
        if tangents.shape[0] != primal.shape[0]:
            raise ValueError(
                f"tangents: expected [B={primal.shape[0]}, k, {', '.join(map(str, item))}], "
                f"got {tuple(tangents.shape)}"
            )
    elif tuple(tangents.shape[1:]) == item and tangents.dim() == primal.dim():
        tangents = tangents.unsqueeze(0).expand(primal.shape[0], *tangents.shape)
    else:
        raise ValueError(
            f"tangents: expected [B, k, {', '.join(map(str, item))}] or [k, {', '.join(map(str, item))}] "
            f"for primal {tuple(primal.shape)}, got {tuple(tangents.shape)}"
        )
    if tangents.dtype != primal.dtype:
        raise TypeError(f"tangents: expected the dtype of primal ({primal.dtype}), got {tangents.dtype}")
    if tangents.device != primal.device:
        raise ValueError(f"tangents: expected device {primal.device}, got {tangents.device}")
    return primal, tangents


# ---- memory budget ---------------------------------------------------------------------------------------


class _BytesCounter(TorchDispatchMode):
    """Sums the bytes of every tensor an op produces: what one extra tangent may have to hold."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.bytes += t.numel() * t.element_size()
        return out


# Per function (weakly held: an id could be reused by a later object), per input shape/dtype/device.
_probe_cache: weakref.WeakKeyDictionary[Callable, dict[tuple, int]] = weakref.WeakKeyDictionary()


def _bytes_per_tangent(fn: Callable, primal: torch.Tensor) -> int:
    key = (tuple(primal.shape), primal.dtype, primal.device)
    try:
        cache = _probe_cache.setdefault(fn, {})
    except TypeError:  # not weak-referenceable: measure every time
        cache = {}
    if key not in cache:
        counter = _BytesCounter()
        with torch.no_grad(), counter:
            fn(primal)
        cache[key] = max(counter.bytes, primal.numel() * primal.element_size())
    return cache[key]


def _default_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.5 * free)
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        avail = 4 << 30
    return int(0.25 * avail)


def _chunk_size(
    fn: Callable, primal: torch.Tensor, k: int, chunk_size: int | None, memory_budget: int | None
) -> int:
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size: expected a positive integer or None, got {chunk_size!r}")
        return min(chunk_size, max(k, 1))
    if k <= 1:
        return 1
    budget = _default_budget(primal.device) if memory_budget is None else int(memory_budget)
    if budget <= 0:
        raise ValueError(f"memory_budget: expected a positive number of bytes, got {memory_budget!r}")
    per_tangent = _bytes_per_tangent(fn, primal)
    return int(min(k, max(1, budget // per_tangent)))


# ---- precision ---------------------------------------------------------------------------------------------


@contextmanager
def _precision(precision: Precision, device: torch.device) -> Iterator[None]:
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        if tf32 and device.type != "cuda":
            # no tensor cores: emulate their rounding so "tf32" means the same numbers everywhere
            with emulate_tf32():
                yield
        elif precision in ("fp16", "bf16"):
            # autocast runs matmuls/convolutions in the low dtype and keeps reductions and normalisations
            # (sum, norm, softmax, ...) in float32.
            dtype = torch.float16 if precision == "fp16" else torch.bfloat16
            with torch.autocast(device_type=device.type, dtype=dtype):
                if precision == "bf16" and device.type == "cpu" and not native_bf16(device):
                    # torch's generic bf16 kernels are 10-90x slower than float32 here: the same numbers
                    # from float32 kernels (tangentlens.bf16)
                    with emulate_bf16():
                        yield
                else:
                    yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# ---- the two ways of computing J v -------------------------------------------------------------------------


def _forward_chunk(
    fn: Callable, primal: torch.Tensor, tan: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """tan [B, kc, ...] -> (fn(primal) [B, ...], J v [B, kc, ...]): one vmapped forward-mode pass."""

    def one(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.func.jvp(fn, (primal,), (t,))

    # randomness="same": every tangent sees the same function (noise drawn once per call).
    return torch.func.vmap(one, in_dims=1, out_dims=(None, 1), randomness="same")(tan)


def _double_vjp_chunk(
    fn: Callable, primal: torch.Tensor, tan: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """J v through two reverse passes: u -> J^T u is linear, so its VJP with cotangent v is J v (exact)."""
    out, vjp_fn = torch.func.vjp(fn, primal)
    u0 = torch.zeros_like(out)  # any u works: the map is linear in u
    _, vjp2 = torch.func.vjp(lambda u: vjp_fn(u)[0], u0)
    try:
        with warnings.catch_warnings():  # "performance drop ... batching rule": the result is still exact
            warnings.filterwarnings("ignore", message=".*batching rule.*")
            tout = torch.func.vmap(lambda v: vjp2(v)[0], in_dims=1, out_dims=1)(tan)
    except (NotImplementedError, RuntimeError):  # an op without a batching rule: one tangent at a time
        tout = torch.stack([vjp2(tan[:, i])[0] for i in range(tan.shape[1])], dim=1)
    return out.detach(), tout.detach()


def _rules_chunk(fn: Callable, primal: torch.Tensor, tan: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Modules with stacked forward rules (``forward_jvp``, e.g. StyleGAN2Generator): primal and tangents in
    one pass through every layer."""
    with torch.no_grad():
        return fn.forward_jvp(primal, tan)


def _noise_const(fn: Callable) -> Callable:
    """The function the generic path differentiates: generators with forward rules use constant noise there
    too, so both paths compute the same JVP."""
    if hasattr(fn, "forward_jvp") and isinstance(fn, nn.Module):
        import inspect

        if "noise_mode" in inspect.signature(fn.forward).parameters:
            return lambda x: fn(x, noise_mode="const")
    return fn


def _missing_op(exc: BaseException) -> str | None:
    m = _FWD_AD_MISSING.search(str(exc))
    return None if m is None else (m.group(1) or m.group(2))


def _is_missing_forward_rule(exc: BaseException) -> bool:
    msg = str(exc)
    return isinstance(exc, (NotImplementedError, RuntimeError)) and (
        "forward AD" in msg or "forward-mode" in msg or ("jvp" in msg.lower() and "not" in msg.lower())
    )


# ---- coverage --------------------------------------------------------------------------------------------


def _jvp_failure(
    path: str, owner: object, call: Callable, primals: tuple[torch.Tensor, ...]
) -> Unsupported | None:
    """Try one forward-mode JVP of ``call`` at ``primals``; the failure, if any, as a report entry."""
    try:
        torch.func.jvp(call, primals, tuple(torch.randn_like(p) for p in primals))
    except Exception as exc:  # noqa: BLE001 - reported, not swallowed
        return Unsupported(path, type(owner).__name__, _missing_op(exc), str(exc).splitlines()[0])
    return None


def _leaf_failures(fn: Callable, primal: torch.Tensor) -> list[Unsupported]:
    """Forward-mode JVP of every leaf submodule of ``fn`` (an nn.Module) on the inputs it sees in one pass."""
    if not isinstance(fn, nn.Module):
        whole = _jvp_failure("", fn, fn, (primal,))
        return [] if whole is None else [whole]
    captured: dict[str, tuple] = {}

    def hook(name: str) -> Callable:
        def record(mod: nn.Module, args: tuple, out: object) -> None:  # returns None: the output is kept
            captured.setdefault(name, tuple(args))

        return record

    hooks = [
        mod.register_forward_hook(hook(name))
        for name, mod in fn.named_modules()
        if next(mod.children(), None) is None
    ]
    try:
        with torch.no_grad():
            fn(primal)
    finally:
        for h in hooks:
            h.remove()
    mods = dict(fn.named_modules())
    found: list[Unsupported] = []
    for name, args in captured.items():
        idx = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.is_floating_point()]
        if not idx:
            continue

        def call(*ts: torch.Tensor, args: tuple = args, idx: list[int] = idx, mod: nn.Module = mods[name]):  # noqa: ANN202
            full = list(args)
            for i, t in zip(idx, ts, strict=True):
                full[i] = t
            return mod(*full)

        failure = _jvp_failure(name, mods[name], call, tuple(args[i] for i in idx))
        if failure is not None:
            found.append(failure)
    if not found:  # a functional op outside any leaf module
        whole = _jvp_failure("", fn, fn, (primal,))
        found += [] if whole is None else [whole]
    return found


def coverage(fn: Callable[[torch.Tensor], torch.Tensor], primal: torch.Tensor) -> CoverageReport:
    """Which parts of ``fn`` forward mode can differentiate at ``primal``, and the method :func:`jvp` uses.

    For an ``nn.Module`` every leaf submodule is tried on the inputs it receives in one forward pass, first
    with tangentlens' native ops, then with their references; the report names each failing submodule and
    the op without a forward rule.
    """
    native = _leaf_failures(fn, primal)
    if not native:
        return CoverageReport("forward")
    with default_impl("reference"):
        ref = _leaf_failures(fn, primal)
    if not ref:
        return CoverageReport("forward-reference", unsupported_native=native)
    return CoverageReport("double_vjp", unsupported_native=native, unsupported=ref)


# ---- the engine --------------------------------------------------------------------------------------------


def jvp(
    fn: Callable[[torch.Tensor], torch.Tensor],
    primal: torch.Tensor,
    tangents: torch.Tensor,
    *,
    chunk_size: int | None = None,
    memory_budget: int | None = None,
    impl: Impl = "auto",
    method: Method = "auto",
    precision: Precision = "fp32",
    crosscheck: int = 0,
    return_info: bool = False,
) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, JVPInfo]:
    """``(fn(primal), J v)`` for k tangents per point.

    Args:
        fn: a function or module mapping ``primal [B, ...]`` to ``[B, ...]``, row by row (sample b of the
            output depends on sample b of the input only). It must be deterministic within a call (use
            constant noise in generators): chunks of tangents re-run the primal.
        primal: ``[B, ...]`` points.
        tangents: ``[B, k, ...]`` (k per point) or ``[k, ...]`` (the same k for every point).
        chunk_size: tangents per vmapped pass; None chooses the largest that fits ``memory_budget``
            (default: half the free GPU memory, a quarter of the free RAM), estimated from the bytes one
            forward pass allocates.
        impl: implementation of tangentlens' ops inside ``fn`` (``"auto"``: native where they have forward
            rules, their references where they do not).
        method: ``"forward"`` (vmapped forward mode; an error if an op lacks a forward rule),
            ``"double_vjp"``, or ``"auto"``: forward mode, else the reference ops, else double-VJP, with a
            warning naming the ops.
        precision: ``"fp32"`` (TF32 off), ``"tf32"`` (tensor cores on CUDA, emulated elsewhere by
            :func:`tangentlens.tf32.emulate_tf32`), ``"fp16"`` / ``"bf16"`` (autocast: convolutions and
            matmuls in the low dtype, reductions and normalisations in fp32; bf16 on a CPU without native
            bf16 kernels is emulated by :func:`tangentlens.bf16.emulate_bf16`: the same numbers at float32
            speed).
        crosscheck: with reduced precision, recompute this many points in fp32 and report the relative tangent
            error in the info.
        return_info: also return a :class:`JVPInfo`.

    Returns:
        ``out [B, ...]`` and ``tangent_outs [B, k, ...]`` (and the info).
    """
    primal, tangents = _check_inputs(primal, tangents)
    primal = primal.contiguous()  # forward AD cannot attach a tangent to an expanded (overlapping) view
    if method not in ("auto", "forward", "double_vjp"):
        raise ValueError(f"method: expected 'auto', 'forward' or 'double_vjp', got {method!r}")
    if isinstance(crosscheck, bool) or not isinstance(crosscheck, int) or crosscheck < 0:
        raise ValueError(f"crosscheck: expected a non-negative integer, got {crosscheck!r}")
    k = tangents.shape[1]
    rules = hasattr(fn, "forward_jvp") and impl != "reference" and method != "double_vjp"
    fn_generic = _noise_const(fn)
    chunk = _chunk_size(fn_generic, primal, k, chunk_size, memory_budget)
    report: CoverageReport | None = None
    run_impl: Impl = impl
    used = "double_vjp" if method == "double_vjp" else "forward"

    def run(chunk_fn: Callable, t: torch.Tensor, impl_: Impl) -> tuple[torch.Tensor, torch.Tensor]:
        with default_impl(impl_), _precision(precision, primal.device):
            return chunk_fn(fn if chunk_fn is _rules_chunk else fn_generic, primal, t)

    if rules:
        used = "forward-rules"

    outs: list[torch.Tensor] = []
    out: torch.Tensor | None = None
    starts = list(range(0, k, chunk)) or [0]
    for i, s in enumerate(starts):
        t = tangents[:, s : s + chunk].contiguous()
        if used == "forward-rules":
            try:
                o, to = run(_rules_chunk, t, run_impl)
            except NotImplementedError:  # a layer the stacked rules do not cover: the generic path
                if i > 0:
                    raise
                used = "forward"
        if used == "forward":
            try:
                o, to = run(_forward_chunk, t, run_impl)
            except (NotImplementedError, RuntimeError) as exc:
                if method == "forward" or i > 0 or not _is_missing_forward_rule(exc):
                    raise
                report = coverage(fn_generic, primal)
                if report.method == "forward-reference":
                    run_impl = "reference"
                    used = "forward-reference"
                    o, to = run(_forward_chunk, t, run_impl)
                else:
                    used = "double_vjp"
                    o, to = run(_double_vjp_chunk, t, run_impl)
                warnings.warn(
                    f"tangentlens.jvp: forward mode is not available for all of fn; using {used}.\n{report}",
                    RuntimeWarning,
                    stacklevel=2,
                )
        elif used == "forward-reference":
            o, to = run(_forward_chunk, t, run_impl)
        elif used == "double_vjp":
            o, to = run(_double_vjp_chunk, t, run_impl)
        if out is None:
            out = o
        outs.append(to)
    assert out is not None
    tout = torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]
    if not return_info:
        return out, tout
    info = JVPInfo(
        method=used,
        chunk_size=chunk,
        num_chunks=len(starts),
        precision=precision,
        report=report,
    )
    if crosscheck and precision != "fp32":
        n = min(crosscheck, primal.shape[0])
        _, ref = jvp(
            fn,
            primal[:n],
            tangents[:n],
            chunk_size=chunk,
            impl=run_impl if used != "double_vjp" else impl,
            method="double_vjp" if used == "double_vjp" else "forward",
            precision="fp32",
        )
        got, ref = tout[:n].detach().double(), ref.detach().double()  # a report, not part of the graph
        err = (got - ref).abs().max()
        scale = ref.abs().max().clamp_min(torch.finfo(torch.float64).tiny)
        info.crosscheck_rel_error = float(err / scale)
        info.crosscheck_points = n
    return out, tout, info
