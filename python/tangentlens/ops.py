"""Typed wrappers over ``torch.ops.tangentlens.*`` with their fake (meta) kernels and autograd.

Every op has a pure-PyTorch twin in :mod:`tangentlens.reference`; ``impl="auto"`` (the default) runs
the compiled kernel when it is available for the device and the reference otherwise,
``impl="reference"`` forces the reference, ``impl="native"`` forces the kernel (an error where it
cannot run).
"""

from __future__ import annotations

from typing import Literal

import torch

from tangentlens import reference
from tangentlens._checks import (
    FLOAT_DTYPES,
    U64,
    check_count,
    check_float_dtype,
    check_int,
    check_u64,
    check_u64_range,
)
from tangentlens._extension import NATIVE_AVAILABLE, Impl, resolve_impl
from tangentlens.reference import bias_act as _ref_bias_act

__all__ = [
    "bias_act",
    "bias_act_jvp",
    "FLOAT_DTYPES",
    "filtered_lrelu",
    "filtered_lrelu_jvp",
    "lpips_layer_distance",
    "lpips_tangent_norm",
    "philox4x32_10",
    "philox_normal",
]


def as_i64(value: int) -> int:
    """The int64 carrying the same 64 bits (the op schema has no unsigned type)."""
    return value - U64 if value >= 1 << 63 else value


def philox4x32_10(counters: torch.Tensor, seed: int, *, impl: Impl = "auto") -> torch.Tensor:
    """Raw Philox4x32-10 (Random123's bijection) of ``counters`` int64 [N, 4] (uint32 words) under
    key (lo32(seed), hi32(seed)); returns int64 [N, 4] of uint32 words."""
    check_u64(seed, "seed")
    if not isinstance(counters, torch.Tensor) or counters.dtype != torch.int64:
        raise TypeError(
            f"counters: expected an int64 tensor, got {getattr(counters, 'dtype', type(counters))}"
        )
    if counters.dim() != 2 or counters.shape[1] != 4:
        raise ValueError(f"counters: expected shape [N, 4], got {tuple(counters.shape)}")
    if counters.numel() and (int(counters.min()) < 0 or int(counters.max()) > 0xFFFFFFFF):
        raise ValueError("counters: expected uint32 words in [0, 2**32)")
    if resolve_impl(impl, counters.device) == "reference":
        return reference.philox4x32_10(counters, seed)
    return torch.ops.tangentlens.philox4x32_10(counters, as_i64(seed))


def philox_normal(
    seed: int,
    start: int,
    count: int,
    dim: int,
    *,
    stream: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    out: torch.Tensor | None = None,
    impl: Impl = "auto",
) -> torch.Tensor:
    """Standard normals ``[count, dim]`` from the counter-based generator.

    Row ``i`` depends only on ``(seed, start + i, stream)``: any chunking of an index range gives
    bit-identical rows, on CPU and CUDA, and fp32/fp16/bf16 rows are the rounded fp64 rows.
    ``out`` (``[count, dim]``, unit stride along dim 1, e.g. a row slice of a larger buffer) is
    written in place and returned.
    """
    check_u64(seed, "seed")
    check_u64(start, "start")
    check_count(count, "count")
    check_count(dim, "dim")
    check_u64_range(start, count)
    check_int(stream, "stream", 0, (1 << 32) - 1)
    if out is None:
        check_float_dtype(dtype)
        out = torch.empty(count, dim, dtype=dtype, device=device)
    else:
        if tuple(out.shape) != (count, dim):
            raise ValueError(f"out: expected shape ({count}, {dim}), got {tuple(out.shape)}")
        check_float_dtype(out.dtype, "out.dtype")
        if dim > 1 and out.stride(1) != 1:
            raise ValueError(f"out: expected unit stride along dim 1, got strides {out.stride()}")
    if resolve_impl(impl, out.device) == "reference":
        with torch.no_grad():
            out.copy_(
                reference.philox_normal(
                    seed, start, count, dim, stream=stream, dtype=out.dtype, device=out.device
                )
            )
        return out
    torch.ops.tangentlens.philox_normal_(out, as_i64(seed), as_i64(start), stream)
    return out


# ---- LPIPS layer head (SPEC 3) --------------------------------------------------------------------------

EpsMode = Literal["outside", "inside"]
_EPS_MODES = {"outside": 0, "inside": 1}


def _eps_mode(eps_mode: object) -> int:
    if eps_mode not in _EPS_MODES:
        raise ValueError(
            f"eps_mode: expected 'outside' (lpips: f / (|f| + eps)) or 'inside' "
            f"(torchmetrics: f / sqrt(|f|^2 + eps)), got {eps_mode!r}"
        )
    return _EPS_MODES[eps_mode]  # type: ignore[index]


def _check_eps(eps: object) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < float("inf"):
        raise ValueError(f"eps: expected a finite number >= 0, got {eps!r}")
    return float(eps)


def _feature_map(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name}: expected a 4-D feature map [N, C, H, W], got shape {tuple(x.shape)}")
    check_float_dtype(x.dtype, f"{name}.dtype")
    return x


def _is_channels_last(x: torch.Tensor) -> bool:
    """The layout the kernels read x in: NCHW when x is NCHW-contiguous, else channels_last when it is
    (or when it is a channels_last view that is not dense, e.g. a slice)."""
    if x.is_contiguous():
        return False
    if x.is_contiguous(memory_format=torch.channels_last):
        return True
    st = x.stride()
    return st[1] < st[2] and st[1] < st[3]


def _lpips_weight(weight: object, f: torch.Tensor) -> torch.Tensor:
    """[C] (or lpips' [1, C, 1, 1] conv weight) in the accumulation dtype of f."""
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight: expected a tensor, got {type(weight).__name__}")
    c = f.shape[1]
    if weight.numel() != c or (weight.dim() != 1 and tuple(weight.shape) != (1, c, 1, 1)):
        raise ValueError(f"weight: expected shape [{c}] or [1, {c}, 1, 1], got {tuple(weight.shape)}")
    if weight.device != f.device:
        raise ValueError(f"weight: expected device {f.device}, got {weight.device}")
    acc = torch.float64 if f.dtype == torch.float64 else torch.float32
    return weight.reshape(c).to(acc).contiguous()


def lpips_layer_distance(
    f0: torch.Tensor,
    f1: torch.Tensor,
    weight: torch.Tensor,
    *,
    eps: float = 1e-10,
    eps_mode: EpsMode = "outside",
    impl: Impl = "auto",
) -> torch.Tensor:
    """One LPIPS layer's contribution ``mean_hw sum_c w_c (f0_hat - f1_hat)^2`` -> [N], fused.

    ``f0``, ``f1``: [N, C, H, W] feature maps of one layer (fp16/bf16/fp32/fp64, one dtype), ``weight``: the
    layer's non-negative linear weights [C]. The result is float32 (float64 for float64 maps); per-pixel
    sums run in float32 (float64). NCHW and channels_last maps are read as they are (f1 is converted to the
    layout of f0 if it differs; other strides are made contiguous). A non-finite value in a sample's maps
    makes that sample's result NaN (other samples are unaffected). Differentiable in f0, f1 and weight
    (the backward pass is the reference formula's).
    """
    f0 = _feature_map(f0, "f0")
    f1 = _feature_map(f1, "f1")
    if f0.shape != f1.shape:
        raise ValueError(f"f1: expected the shape of f0 {tuple(f0.shape)}, got {tuple(f1.shape)}")
    if f0.dtype != f1.dtype:
        raise TypeError(f"f1: expected the dtype of f0 ({f0.dtype}), got {f1.dtype}")
    if f0.device != f1.device:
        raise ValueError(f"f1: expected device {f0.device}, got {f1.device}")
    w = _lpips_weight(weight, f0)
    mode, eps = _eps_mode(eps_mode), _check_eps(eps)
    if resolve_impl(impl, f0.device, backward_only=(f0, f1, w)) == "reference":
        return reference.lpips_layer_distance(f0, f1, w, eps, mode)
    fmt = torch.channels_last if _is_channels_last(f0) else torch.contiguous_format
    f0, f1 = f0.contiguous(memory_format=fmt), f1.contiguous(memory_format=fmt)
    return torch.ops.tangentlens.lpips_layer_distance(f0, f1, w, eps, mode)


# Above this many tangents the Gram goes through a GEMM: the fused kernel's K (K + 1) / 2 per-pixel dot
# products are the same FLOPs without the blocking of a matrix product (about 100x slower at K = 512).
GRAM_NATIVE_MAX_K = 16
# elements of materialised normalised tangents per GEMM band (a band of image rows)
_GRAM_BAND_ELEMENTS = 1 << 24


def _tangent_gram_gemm(
    f: torch.Tensor, tangents: torch.Tensor, wt: torch.Tensor, eps: float, mode: int
) -> torch.Tensor:
    """``<d e_i, d e_j>`` [N, K, K]: the normalised tangents of a band of rows materialised (float32, or
    float64 for float64 maps), one batched GEMM per band, the bands summed in float64."""
    n, k, c, h, w = tangents.shape
    work = torch.float64 if f.dtype == torch.float64 else torch.float32
    scale = torch.sqrt(wt.to(work) / (h * w)).reshape(1, 1, -1, 1, 1)
    rows = max(1, _GRAM_BAND_ELEMENTS // max(1, n * k * c * w))
    out = torch.zeros(n, k, k, dtype=torch.float64, device=f.device)
    for r in range(0, h, rows):
        g = reference.normalization_tangent(
            f[:, :, r : r + rows].to(work), tangents[:, :, :, r : r + rows].to(work), eps, mode
        )
        g = (g * scale).reshape(n, k, -1)
        out += torch.bmm(g, g.transpose(1, 2)).to(torch.float64)
    return out.to(work)


def lpips_tangent_norm(
    f: torch.Tensor,
    tangents: torch.Tensor,
    weight: torch.Tensor,
    *,
    eps: float = 1e-8,
    eps_mode: EpsMode = "inside",
    gram: bool = False,
    impl: Impl = "auto",
) -> torch.Tensor:
    """Squared norms of the tangents of one layer's LPIPS embedding ``e = sqrt(w / (H W)) f_hat``.

    ``f``: [N, C, H, W]; ``tangents``: [N, K, C, H, W], K tangent maps of f (e.g. JVPs of the trunk).
    Per pixel ``d f_hat = (t - f_hat <f_hat, t>) / |f|`` (with the eps convention, SPEC 3), and the result is
    ``|d e|^2`` [N, K], or with ``gram=True`` the inner products ``<d e_i, d e_j>`` [N, K, K], computed
    without materialising ``d f_hat`` (for more than ``GRAM_NATIVE_MAX_K`` tangents the Gram is a GEMM
    over bands of rows of the materialised ``d f_hat``, summed in float64). The default
    ``eps_mode="inside"`` (torchmetrics' form, eps 1e-8) is smooth at f = 0; with ``"outside"`` the
    derivative at a pixel with f = 0 is the one-sided ``t / eps``.
    Summing over layers gives ``|J v|^2`` of the full embedding. Float32 result (float64 for float64 maps).
    """
    f = _feature_map(f, "f")
    if not isinstance(tangents, torch.Tensor):
        raise TypeError(f"tangents: expected a tensor, got {type(tangents).__name__}")
    n, c, h, w_ = f.shape
    if tangents.dim() != 5 or tangents.shape[0] != n or tuple(tangents.shape[2:]) != (c, h, w_):
        raise ValueError(f"tangents: expected shape [{n}, K, {c}, {h}, {w_}], got {tuple(tangents.shape)}")
    if tangents.dtype != f.dtype:
        raise TypeError(f"tangents: expected the dtype of f ({f.dtype}), got {tangents.dtype}")
    if tangents.device != f.device:
        raise ValueError(f"tangents: expected device {f.device}, got {tangents.device}")
    wt = _lpips_weight(weight, f)
    mode, eps = _eps_mode(eps_mode), _check_eps(eps)
    if resolve_impl(impl, f.device, backward_only=(f, tangents, wt)) == "reference":
        return reference.lpips_tangent_norm(f, tangents, wt, eps, mode, bool(gram))
    if gram and tangents.shape[1] > GRAM_NATIVE_MAX_K:
        return _tangent_gram_gemm(f, tangents, wt, eps, mode)
    if _is_channels_last(f):
        f = f.contiguous(memory_format=torch.channels_last)
        tangents = tangents.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    else:
        f, tangents = f.contiguous(), tangents.contiguous()
    return torch.ops.tangentlens.lpips_tangent_norm(f, tangents, wt, eps, mode, bool(gram))


# ---- fused bias + activation + gain + clamp (NVIDIA's bias_act) -------------------------------------------

_ACT_NAMES = {spec.code: name for name, spec in _ref_bias_act.ACTIVATIONS.items()}


def _bias_act_args(
    x: object,
    b: object,
    dim: object,
    act: object,
    alpha: object,
    gain: object,
    clamp: object,
) -> tuple[torch.Tensor, int, int, float, float, float]:
    """Validated (x, dim, act code, alpha, gain, clamp) with NVIDIA's defaults; dim normalised to [0, ndim).

    Negative dims are accepted (dim + x.ndim, NVIDIA accepts only [0, ndim)); dim is checked only when b is
    given (without a bias it is unused)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a tensor, got {type(x).__name__}")
    check_float_dtype(x.dtype, "x.dtype")
    if not isinstance(act, str) or act not in _ref_bias_act.ACTIVATIONS:
        raise ValueError(f"act: expected one of {sorted(_ref_bias_act.ACTIVATIONS)}, got {act!r}")
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim: expected an int, got {type(dim).__name__}")
    for name, v in (("alpha", alpha), ("gain", gain), ("clamp", clamp)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v != v):
            raise ValueError(f"{name}: expected a number or None, got {v!r}")
    spec, alpha_f, gain_f, clamp_f = _ref_bias_act.resolve_args(act, alpha, gain, clamp)  # type: ignore[arg-type]
    if abs(alpha_f) == float("inf") or abs(gain_f) == float("inf"):
        raise ValueError(f"alpha, gain: expected finite numbers, got {alpha_f}, {gain_f}")
    if b is not None:
        if not isinstance(b, torch.Tensor):
            raise TypeError(f"b: expected a tensor or None, got {type(b).__name__}")
        if not -x.ndim <= dim < x.ndim:
            raise ValueError(
                f"dim: expected an int in [-{x.ndim}, {x.ndim}) (x has {x.ndim} dims), got {dim}"
            )
        dim = dim % x.ndim
        c = x.shape[dim]
        if b.dim() != 1 or b.shape[0] != c:
            raise ValueError(f"b: expected shape [{c}] (x.shape[{dim}]), got {list(b.shape)}")
        if b.dtype != x.dtype:
            raise TypeError(f"b: expected the dtype of x ({x.dtype}), got {b.dtype}")
        if b.device != x.device:
            raise ValueError(f"b: expected device {x.device}, got {b.device}")
    elif x.ndim:
        dim = dim % x.ndim if -x.ndim <= dim < x.ndim else 0
    else:
        dim = 0
    return x, dim, spec.code, alpha_f, gain_f, clamp_f


def _contig(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.contiguous()


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    *,
    impl: Impl = "auto",
) -> torch.Tensor:
    """``clamp(gain * act(x + b), -clamp, clamp)`` with b [x.shape[dim]] broadcast along ``dim``, fused.

    NVIDIA's contract (StyleGAN2/3 ``bias_act``): alpha and gain default per activation (gain sqrt 2 for
    relu, lrelu, swish; lrelu alpha 0.2), ``clamp`` None or < 0 means no clamping. x of any rank and
    strides (made contiguous), fp16/bf16/fp32/fp64, b of x's dtype; math in float32 (float64 for float64),
    the result in x's dtype. ``dim`` may be negative. NaN propagates. Differentiable in reverse mode;
    :func:`tangentlens.bias_act.bias_act` adds forward mode (``torch.func.jvp``) and vmap over tangents.
    """
    x, dim, code, alpha_f, gain_f, clamp_f = _bias_act_args(x, b, dim, act, alpha, gain, clamp)
    if resolve_impl(impl, x.device) == "reference":
        return _ref_bias_act.bias_act(x, b, dim, act, alpha_f, gain_f, clamp_f)
    return torch.ops.tangentlens.bias_act(x.contiguous(), _contig(b), dim, code, alpha_f, gain_f, clamp_f)


def bias_act_jvp(
    x: torch.Tensor,
    b: torch.Tensor | None,
    tx: torch.Tensor,
    tb: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    *,
    impl: Impl = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, ty)``: :func:`bias_act` and its K tangents in one pass.

    ``tx`` [K, *x.shape]: tangents of x; ``tb`` [K, C] (or None): tangents of b (needs b).
    ``ty_k = gain act'(x + b) (tx_k + tb_k)``, exactly 0 where the derivative is 0 (relu's negative side)
    and where the clamp is active (``|gain act(x + b)| > clamp``; the boundary passes), as autograd of the
    reference gives. Each element of x is read once and its derivative computed once for all K tangents.
    """
    x, dim, code, alpha_f, gain_f, clamp_f = _bias_act_args(x, b, dim, act, alpha, gain, clamp)
    if not isinstance(tx, torch.Tensor):
        raise TypeError(f"tx: expected a tensor, got {type(tx).__name__}")
    if tx.dim() != x.dim() + 1 or tuple(tx.shape[1:]) != tuple(x.shape):
        raise ValueError(
            f"tx: expected shape [K, *x.shape] = [K, {', '.join(map(str, x.shape))}], got {list(tx.shape)}"
        )
    if tx.dtype != x.dtype:
        raise TypeError(f"tx: expected the dtype of x ({x.dtype}), got {tx.dtype}")
    if tx.device != x.device:
        raise ValueError(f"tx: expected device {x.device}, got {tx.device}")
    if tb is not None:
        if b is None:
            raise ValueError("tb: tangents of b given without b")
        if not isinstance(tb, torch.Tensor):
            raise TypeError(f"tb: expected a tensor or None, got {type(tb).__name__}")
        k, c = tx.shape[0], x.shape[dim]
        if tuple(tb.shape) != (k, c):
            raise ValueError(f"tb: expected shape [K, C] = [{k}, {c}], got {list(tb.shape)}")
        if tb.dtype != x.dtype:
            raise TypeError(f"tb: expected the dtype of x ({x.dtype}), got {tb.dtype}")
        if tb.device != x.device:
            raise ValueError(f"tb: expected device {x.device}, got {tb.device}")
    if resolve_impl(impl, x.device) == "reference":
        return _ref_bias_act.bias_act_jvp(x, b, tx, tb, dim, act, alpha_f, gain_f, clamp_f)
    return torch.ops.tangentlens.bias_act_jvp(
        x.contiguous(), _contig(b), tx.contiguous(), _contig(tb), dim, code, alpha_f, gain_f, clamp_f
    )


def bias_act_backward(
    x: torch.Tensor,
    b: torch.Tensor | None,
    grad: torch.Tensor,
    dim: int,
    code: int,
    alpha: float,
    gain: float,
    clamp: float,
    need_b: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients (gx, gb) of bias_act. The Jacobian is diagonal, so gx is the native tangent kernel applied
    to ``grad`` (K = 1) and gb its sum over all dims but ``dim``. Under ``create_graph`` (grad mode on) the
    reference's explicit derivative formula (plain torch ops) is used instead, so higher derivatives work."""
    if torch.is_grad_enabled():
        # create_graph: the explicit derivative formula in plain torch ops, differentiable in x, b and grad.
        _, gx = _ref_bias_act.bias_act_jvp(
            x, b, grad.unsqueeze(0), None, dim, _ACT_NAMES[code], alpha, gain, clamp
        )
        gx = gx[0]
    else:
        _, gx = torch.ops.tangentlens.bias_act_jvp(
            x.contiguous(), _contig(b), grad.contiguous().unsqueeze(0), None, dim, code, alpha, gain, clamp
        )
        gx = gx[0]
    gb = None
    if b is not None and need_b:
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        dims = [i for i in range(x.ndim) if i != dim]
        gb = gx.sum(dims, dtype=acc).to(b.dtype) if dims else gx.to(b.dtype)
    return gx, gb


# ---- fake kernels (torch.compile / meta) and autograd ------------------------------------------------

if NATIVE_AVAILABLE:

    @torch.library.register_fake("tangentlens::philox4x32_10")
    def _philox4x32_10_fake(counters: torch.Tensor, seed: int) -> torch.Tensor:
        return torch.empty_like(counters)

    @torch.library.register_fake("tangentlens::philox_normal_")
    def _philox_normal_fake(out: torch.Tensor, seed: int, start: int, stream: int) -> None:
        return None

    @torch.library.register_fake("tangentlens::paths_sample_")
    def _paths_sample_fake(z0, z1, t, p0, p1, tangent, seed, start, dim, path_kind, full, eps) -> None:  # noqa: ANN001
        return None

    @torch.library.register_fake("tangentlens::interpolate")
    def _interpolate_fake(
        a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, path_kind: int, with_tangent: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        torch._check(a.dim() == 2, lambda: "a: expected a 2-D tensor")
        return torch.empty_like(a, memory_format=torch.contiguous_format), (
            torch.empty_like(a, memory_format=torch.contiguous_format) if with_tangent else a.new_empty(0)
        )

    def _interpolate_setup(ctx, inputs, output) -> None:  # noqa: ANN001
        a, b, t, path_kind, with_tangent = inputs
        ctx.save_for_backward(a, b, t)
        ctx.path_kind, ctx.with_tangent = path_kind, with_tangent

    def _interpolate_backward(ctx, grad_p, grad_tangent):  # noqa: ANN001, ANN202
        # The kernels are forward-only; gradients come from the reference formula (same maths).
        a, b, t = ctx.saved_tensors
        with torch.enable_grad():
            leaves = [x.detach().requires_grad_(x.requires_grad or x.is_floating_point()) for x in (a, b, t)]
            p, tan = reference.interpolate(*leaves, ctx.path_kind, ctx.with_tangent)
            outs, grads = [p], [grad_p]
            if ctx.with_tangent and tan is not None and grad_tangent is not None and grad_tangent.numel():
                outs.append(tan)
                grads.append(grad_tangent)
            ga, gb, gt = torch.autograd.grad(outs, leaves, grads, allow_unused=True)
        return ga, gb, gt, None, None

    torch.library.register_autograd(
        "tangentlens::interpolate", _interpolate_backward, setup_context=_interpolate_setup
    )

    # LPIPS layer head: forward kernels; gradients from the reference formula (same maths).
    @torch.library.register_fake("tangentlens::lpips_layer_distance")
    def _lpips_layer_distance_fake(
        f0: torch.Tensor, f1: torch.Tensor, weight: torch.Tensor, eps: float, eps_mode: int
    ) -> torch.Tensor:
        torch._check(f0.dim() == 4, lambda: "f0: expected a 4-D feature map")
        return f0.new_empty(f0.shape[0], dtype=weight.dtype)

    @torch.library.register_fake("tangentlens::lpips_tangent_norm")
    def _lpips_tangent_norm_fake(
        f: torch.Tensor, tangents: torch.Tensor, weight: torch.Tensor, eps: float, eps_mode: int, gram: bool
    ) -> torch.Tensor:
        torch._check(tangents.dim() == 5, lambda: "tangents: expected a 5-D tensor")
        n, k = tangents.shape[0], tangents.shape[1]
        shape = (n, k, k) if gram else (n, k)
        return f.new_empty(shape, dtype=weight.dtype)

    def _reference_backward(fn, n_tensors: int):  # noqa: ANN001, ANN202
        def setup(ctx, inputs, output) -> None:  # noqa: ANN001
            ctx.save_for_backward(*inputs[:n_tensors])
            ctx.rest = inputs[n_tensors:]

        def backward(ctx, grad):  # noqa: ANN001, ANN202
            # grad mode is on here only under create_graph=True: then the backward itself must be
            # differentiable (double backward, Hessians), so the saved inputs keep their graph.
            create = torch.is_grad_enabled()
            with torch.enable_grad():
                leaves = [
                    x if create and x.requires_grad else x.detach().requires_grad_(True)
                    for x in ctx.saved_tensors
                ]
                out = fn(*leaves, *ctx.rest)
                grads = torch.autograd.grad(
                    out, leaves, grad.to(out.dtype), allow_unused=True, create_graph=create
                )
            grads = [
                None if g is None else g.to(x.dtype) for g, x in zip(grads, ctx.saved_tensors, strict=True)
            ]
            return (*grads, *([None] * len(ctx.rest)))

        return backward, setup

    for _name, _fn, _nt in (
        ("lpips_layer_distance", reference.lpips_layer_distance, 3),
        ("lpips_tangent_norm", reference.lpips_tangent_norm, 3),
    ):
        _bw, _setup = _reference_backward(_fn, _nt)
        torch.library.register_autograd(f"tangentlens::{_name}", _bw, setup_context=_setup)

    # ---- bias_act: fake kernels, reverse-mode autograd of the op, vmap rules ----------------------------

    @torch.library.register_fake("tangentlens::bias_act")
    def _bias_act_fake(x, b, dim, act, alpha, gain, clamp):  # noqa: ANN001, ANN202
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    @torch.library.register_fake("tangentlens::bias_act_jvp")
    def _bias_act_jvp_fake(x, b, tx, tb, dim, act, alpha, gain, clamp):  # noqa: ANN001, ANN202
        torch._check(tx.dim() == x.dim() + 1, lambda: "tx: expected shape [K, *x.shape]")
        return (
            torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(tx, memory_format=torch.contiguous_format),
        )

    def _bias_act_setup(ctx, inputs, output) -> None:  # noqa: ANN001
        x, b, *rest = inputs
        ctx.save_for_backward(x, b)
        ctx.rest = rest

    def _bias_act_op_backward(ctx, grad):  # noqa: ANN001, ANN202
        x, b = ctx.saved_tensors
        need_b = b is not None and ctx.needs_input_grad[1]
        gx, gb = bias_act_backward(x, b, grad, *ctx.rest, need_b=need_b)
        return gx, gb, None, None, None, None, None

    torch.library.register_autograd(
        "tangentlens::bias_act", _bias_act_op_backward, setup_context=_bias_act_setup
    )

    def _batched(t: torch.Tensor | None, bd: int | None, size: int) -> torch.Tensor | None:
        """t with its vmapped dim first (expanded when t is not vmapped)."""
        if t is None:
            return None
        return t.movedim(bd, 0) if bd is not None else t.expand(size, *t.shape)

    def _vmap_loop(op, info, in_dims, args):  # noqa: ANN001, ANN202
        """Fallback: one call per batch entry (only where the batch cannot be folded into one launch)."""
        n = len(in_dims)
        outs = []
        for i in range(info.batch_size):
            a = [
                t.select(bd, i) if bd is not None and t is not None else t
                for t, bd in zip(args[:n], in_dims, strict=True)
            ]
            outs.append(op(*a, *args[n:]))
        if isinstance(outs[0], tuple):
            return tuple(torch.stack(o) for o in zip(*outs, strict=True)), (0,) * len(outs[0])
        return torch.stack(outs), 0

    @torch.library.register_vmap("tangentlens::bias_act")
    def _bias_act_vmap(info, in_dims, x, b, dim, act, alpha, gain, clamp):  # noqa: ANN001, ANN202
        x_bd, b_bd = in_dims[:2]
        if b_bd is None:  # a batch of x is one bigger x: a leading dim, the channel dim shifts by one
            xb = _batched(x, x_bd, info.batch_size).contiguous()
            return torch.ops.tangentlens.bias_act(xb, b, dim + 1, act, alpha, gain, clamp), 0
        return _vmap_loop(
            torch.ops.tangentlens.bias_act, info, in_dims[:2], (x, b, dim, act, alpha, gain, clamp)
        )

    @torch.library.register_vmap("tangentlens::bias_act_jvp")
    def _bias_act_jvp_vmap(info, in_dims, x, b, tx, tb, dim, act, alpha, gain, clamp):  # noqa: ANN001, ANN202
        x_bd, b_bd, tx_bd, tb_bd = in_dims[:4]
        bsz, op = info.batch_size, torch.ops.tangentlens.bias_act_jvp
        if x_bd is None and b_bd is None:
            # Only tangents are vmapped (vmap over jvp): fold the batch into K, one launch for B * K tangents.
            txb = _batched(tx, tx_bd, bsz)
            k = txb.shape[1]
            txb = txb.reshape(bsz * k, *x.shape)
            tbb = _batched(tb, tb_bd, bsz)
            tbb = None if tbb is None else tbb.reshape(bsz * k, tbb.shape[-1])
            y, ty = op(x, b, txb.contiguous(), _contig(tbb), dim, act, alpha, gain, clamp)
            return (y, ty.reshape(bsz, k, *x.shape)), (None, 0)
        if b_bd is None and tb_bd is None:
            # A batch of x: x gets a leading dim (dim shifts by one); tangents [K, B, *x.shape].
            xb = _batched(x, x_bd, bsz).contiguous()
            txb = _batched(tx, tx_bd, bsz).transpose(0, 1).contiguous()
            y, ty = op(xb, b, txb, tb, dim + 1, act, alpha, gain, clamp)
            return (y, ty), (0, 1)
        return _vmap_loop(op, info, in_dims[:4], (x, b, tx, tb, dim, act, alpha, gain, clamp))

    # ---- upfirdn2d ---------------------------------------------------------------------------------------

    @torch.library.register_fake("tangentlens::upfirdn2d")
    def _upfirdn2d_fake(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1):  # noqa: ANN001, ANN202
        torch._check(x.dim() == 4, lambda: "x: expected a 4-D tensor [N, C, H, W]")
        full_h = x.shape[2] * upy + pady0 + pady1 - f.shape[0] + 1
        full_w = x.shape[3] * upx + padx0 + padx1 - f.shape[1] + 1
        return x.new_empty(x.shape[0], x.shape[1], (full_h - 1) // downy + 1, (full_w - 1) // downx + 1)

    @torch.library.register_vmap("tangentlens::upfirdn2d")
    def _upfirdn2d_vmap(info, in_dims, x, f, *params):  # noqa: ANN001, ANN202
        # A vmapped batch of images is one bigger batch (vmap over jvp: all tangents in one launch).
        if in_dims[1] is not None:
            return _vmap_loop(torch.ops.tangentlens.upfirdn2d, info, in_dims[:2], (x, f, *params))
        xb = _batched(x, in_dims[0], info.batch_size)
        y = torch.ops.tangentlens.upfirdn2d(xb.reshape(-1, *xb.shape[2:]).contiguous(), f, *params)
        return y.reshape(info.batch_size, -1, *y.shape[1:]), 0


# ---- filtered leaky ReLU (StyleGAN3's filtered_lrelu) ----------------------------------------------------


def _filtered_lrelu_filter(
    f: object, name: str, gain: float, flip_filter: bool, x: torch.Tensor
) -> torch.Tensor:
    """The kernels' filter: ``f`` (None: identity) scaled by ``gain ** (ndim / 2)`` in its own dtype (as
    NVIDIA's upfirdn2d), in the accumulation dtype, flipped unless ``flip_filter`` (correlation form)."""
    if f is None:
        f = torch.ones(1, dtype=torch.float32, device=x.device)
    if not isinstance(f, torch.Tensor) or f.ndim not in (1, 2) or f.numel() == 0 or not f.is_floating_point():
        got = f"shape {tuple(f.shape)}" if isinstance(f, torch.Tensor) else type(f).__name__
        raise ValueError(
            f"{name}: expected None or a non-empty 1-D (separable) or 2-D float filter, got {got}"
        )
    if f.device != x.device:
        raise ValueError(f"{name}: expected device {x.device}, got {f.device}")
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    f = (f * (gain ** (f.ndim / 2))).to(acc)
    return (f if flip_filter else f.flip(list(range(f.ndim)))).contiguous()


def _filtered_lrelu_args(
    x: object,
    fu: object,
    fd: object,
    b: object,
    up: object,
    down: object,
    padding: object,
    gain: object,
    slope: object,
    clamp: object,
    flip_filter: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int, int, int], float, float, float]:
    """Validated (x, fu, fd, padding, gain, slope, clamp) for the kernels: NVIDIA's checks with named errors,
    filters in correlation form (fu with gain up²), clamp < 0 for none."""
    from tangentlens.resample import _parse_padding

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x: expected a 4-D tensor [N, C, H, W], got shape {tuple(x.shape)}")
    check_float_dtype(x.dtype, "x.dtype")
    for name, v in (("up", up), ("down", down)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
    for name, v in (("gain", gain), ("slope", slope)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not abs(v) < float("inf"):
            raise ValueError(f"{name}: expected a finite number, got {v!r}")
    if clamp is not None and (
        isinstance(clamp, bool) or not isinstance(clamp, (int, float)) or not clamp >= 0
    ):
        raise ValueError(f"clamp: expected None or a number >= 0, got {clamp!r}")
    if b is not None:
        if not isinstance(b, torch.Tensor) or b.dim() != 1 or b.shape[0] != x.shape[1]:
            raise ValueError(
                f"b: expected None or shape [{x.shape[1]}] (x.shape[1]), got {getattr(b, 'shape', b)}"
            )
        if b.dtype != x.dtype:
            raise TypeError(f"b: expected the dtype of x ({x.dtype}), got {b.dtype}")
        if b.device != x.device:
            raise ValueError(f"b: expected device {x.device}, got {b.device}")
    pads = _parse_padding(padding)  # type: ignore[arg-type]
    fu_c = _filtered_lrelu_filter(fu, "fu", float(up) ** 2, flip_filter, x)  # type: ignore[operator]
    fd_c = _filtered_lrelu_filter(fd, "fd", 1.0, flip_filter, x)
    uh = x.shape[2] * up + pads[2] + pads[3] - fu_c.shape[0] + 1  # type: ignore[operator]
    uw = x.shape[3] * up + pads[0] + pads[1] - fu_c.shape[-1] + 1  # type: ignore[operator]
    if uh < fd_c.shape[0] or uw < fd_c.shape[-1]:
        raise ValueError(
            f"padding: the upsampled, padded and filtered input ({uh}x{uw}) is smaller than the downsampling "
            f"filter ({fd_c.shape[0]}x{fd_c.shape[-1]})"
        )
    return x, fu_c, fd_c, pads, float(gain), float(slope), -1.0 if clamp is None else float(clamp)  # type: ignore[arg-type]


def _filtered_lrelu_reference(x, fu_c, fd_c, b, up, down, pads, gain, slope, clamp):  # noqa: ANN001, ANN202
    """The reference composition with the kernels' filters (correlation form, up gain included)."""
    clamp_ = None if clamp < 0 else clamp
    return reference.filtered_lrelu(x, fu_c, fd_c, b, up, down, list(pads), gain, slope, clamp_, True, 1.0)


def filtered_lrelu(
    x: torch.Tensor,
    fu: torch.Tensor | None = None,
    fd: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | list[int] = 0,
    gain: float = 2**0.5,
    slope: float = 0.2,
    clamp: float | None = None,
    flip_filter: bool = False,
    *,
    impl: Impl = "auto",
) -> torch.Tensor:
    """NVIDIA's ``filtered_lrelu`` (StyleGAN3) as one fused op: bias, upsampling FIR filter ``fu`` at gain
    ``up²`` after zero insertion and ``padding``, ``clamp(gain * lrelu(., slope))``, downsampling FIR filter
    ``fd`` and subsampling (:mod:`tangentlens.reference.filtered_lrelu` states the contract). x [N, C, H, W]
    of any strides (made contiguous), fp16/bf16/fp32/fp64; filters 1-D (separable), 2-D or None; math in
    float32 (float64 for float64). Differentiable in reverse mode (x, b); :func:`tangentlens.filtered_lrelu.
    filtered_lrelu` adds forward mode and vmap over tangents. Filters that require grad take the reference.
    """
    x, fu_c, fd_c, pads, g, s, c = _filtered_lrelu_args(
        x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter
    )
    grads = any(isinstance(f, torch.Tensor) and f.requires_grad for f in (fu, fd))
    if grads or resolve_impl(impl, x.device, backward_only=(x, b)) == "reference":
        return reference.filtered_lrelu(x, fu, fd, b, up, down, padding, g, s, clamp, flip_filter)
    return torch.ops.tangentlens.filtered_lrelu(
        x.contiguous(), fu_c, fd_c, _contig(b), up, down, *pads, g, s, c
    )


def filtered_lrelu_jvp(
    x: torch.Tensor,
    fu: torch.Tensor | None,
    fd: torch.Tensor | None,
    b: torch.Tensor | None,
    tx: torch.Tensor,
    tb: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | list[int] = 0,
    gain: float = 2**0.5,
    slope: float = 0.2,
    clamp: float | None = None,
    flip_filter: bool = False,
    *,
    impl: Impl = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, ty)``: :func:`filtered_lrelu` and its K tangents in one pass. ``tx [K, N, C, H, W]``,
    ``tb [K, C]`` (or None; needs b). ``ty_k = down(fd, d * up(fu, tx_k + tb_k))`` with
    ``d = gain lrelu'(u)`` of the primal's upsampled pre-activation u where the clamp does not bind (the
    boundary passes), else 0: the primal's mask and the filters serve all K tangents."""
    x, fu_c, fd_c, pads, g, s, c = _filtered_lrelu_args(
        x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter
    )
    if not isinstance(tx, torch.Tensor):
        raise TypeError(f"tx: expected a tensor, got {type(tx).__name__}")
    if tx.dim() != 5 or tuple(tx.shape[1:]) != tuple(x.shape):
        raise ValueError(
            f"tx: expected shape [K, *x.shape] = [K, {', '.join(map(str, x.shape))}], got {list(tx.shape)}"
        )
    if tx.dtype != x.dtype:
        raise TypeError(f"tx: expected the dtype of x ({x.dtype}), got {tx.dtype}")
    if tx.device != x.device:
        raise ValueError(f"tx: expected device {x.device}, got {tx.device}")
    if tb is not None:
        if b is None:
            raise ValueError("tb: tangents of b given without b")
        if not isinstance(tb, torch.Tensor) or tuple(tb.shape) != (tx.shape[0], x.shape[1]):
            raise ValueError(
                f"tb: expected shape [K, C] = [{tx.shape[0]}, {x.shape[1]}], got {getattr(tb, 'shape', tb)}"
            )
        if tb.dtype != x.dtype or tb.device != x.device:
            raise TypeError(
                f"tb: expected the dtype and device of x ({x.dtype}, {x.device}), got {tb.dtype}, {tb.device}"
            )
    if resolve_impl(impl, x.device) == "reference" or any(
        isinstance(f, torch.Tensor) and f.requires_grad for f in (fu, fd)
    ):
        return reference.filtered_lrelu_jvp(x, fu, fd, b, tx, tb, up, down, padding, g, s, clamp, flip_filter)
    return torch.ops.tangentlens.filtered_lrelu_jvp(
        x.contiguous(), fu_c, fd_c, _contig(b), tx.contiguous(), _contig(tb), up, down, *pads, g, s, c
    )


if NATIVE_AVAILABLE:

    def _filtered_lrelu_shape(x, fu, fd, up, down, padx0, padx1, pady0, pady1):  # noqa: ANN001, ANN202
        uh = x.shape[2] * up + pady0 + pady1 - fu.shape[0] + 1
        uw = x.shape[3] * up + padx0 + padx1 - fu.shape[-1] + 1
        return (x.shape[0], x.shape[1], (uh - fd.shape[0]) // down + 1, (uw - fd.shape[-1]) // down + 1)

    @torch.library.register_fake("tangentlens::filtered_lrelu")
    def _filtered_lrelu_fake(x, fu, fd, b, up, down, padx0, padx1, pady0, pady1, gain, slope, clamp):  # noqa: ANN001, ANN202
        torch._check(x.dim() == 4, lambda: "x: expected a 4-D tensor [N, C, H, W]")
        return x.new_empty(_filtered_lrelu_shape(x, fu, fd, up, down, padx0, padx1, pady0, pady1))

    @torch.library.register_fake("tangentlens::filtered_lrelu_jvp")
    def _filtered_lrelu_jvp_fake(
        x, fu, fd, b, tx, tb, up, down, padx0, padx1, pady0, pady1, gain, slope, clamp
    ):  # noqa: ANN001, ANN202
        torch._check(tx.dim() == 5, lambda: "tx: expected shape [K, N, C, H, W]")
        shape = _filtered_lrelu_shape(x, fu, fd, up, down, padx0, padx1, pady0, pady1)
        return x.new_empty(shape), x.new_empty((tx.shape[0], *shape))

    def _filtered_lrelu_setup(ctx, inputs, output) -> None:  # noqa: ANN001
        x, fu, fd, b, *rest = inputs
        ctx.save_for_backward(x, fu, fd, b)
        ctx.rest = rest

    def _filtered_lrelu_op_backward(ctx, grad):  # noqa: ANN001, ANN202
        # The adjoint from the reference composition at the saved input (exact; differentiable again under
        # create_graph): the same mask, as both evaluate the activation of the same upsampled input.
        x, fu, fd, b = ctx.saved_tensors
        up, down, px0, px1, py0, py1, gain, slope, clamp = ctx.rest
        create = torch.is_grad_enabled()
        with torch.enable_grad():
            xl = x if create and x.requires_grad else x.detach().requires_grad_(True)
            bl = None if b is None else (b if create and b.requires_grad else b.detach().requires_grad_(True))
            y = _filtered_lrelu_reference(xl, fu, fd, bl, up, down, (px0, px1, py0, py1), gain, slope, clamp)
            leaves = [xl] if bl is None else [xl, bl]
            grads = torch.autograd.grad(y, leaves, grad.to(y.dtype), create_graph=create, allow_unused=True)
        gb = grads[1] if bl is not None else None
        return grads[0], None, None, gb, *([None] * 9)

    torch.library.register_autograd(
        "tangentlens::filtered_lrelu", _filtered_lrelu_op_backward, setup_context=_filtered_lrelu_setup
    )

    @torch.library.register_vmap("tangentlens::filtered_lrelu")
    def _filtered_lrelu_vmap(info, in_dims, x, fu, fd, b, *params):  # noqa: ANN001, ANN202
        op = torch.ops.tangentlens.filtered_lrelu
        if any(d is not None for d in in_dims[1:4]):
            return _vmap_loop(op, info, in_dims[:4], (x, fu, fd, b, *params))
        xb = _batched(x, in_dims[0], info.batch_size)  # a batch of images is one bigger batch
        y = op(xb.reshape(-1, *xb.shape[2:]).contiguous(), fu, fd, b, *params)
        return y.reshape(info.batch_size, -1, *y.shape[1:]), 0

    @torch.library.register_vmap("tangentlens::filtered_lrelu_jvp")
    def _filtered_lrelu_jvp_vmap(info, in_dims, x, fu, fd, b, tx, tb, *params):  # noqa: ANN001, ANN202
        x_bd, fu_bd, fd_bd, b_bd, tx_bd, tb_bd = in_dims[:6]
        bsz, op = info.batch_size, torch.ops.tangentlens.filtered_lrelu_jvp
        if x_bd is None and fu_bd is None and fd_bd is None and b_bd is None:
            # Only tangents are vmapped (vmap over jvp): one launch for the B * K tangents.
            txb = _batched(tx, tx_bd, bsz)
            k = txb.shape[1]
            tbb = _batched(tb, tb_bd, bsz)
            tbb = None if tbb is None else tbb.reshape(bsz * k, -1).contiguous()
            y, ty = op(x, fu, fd, b, txb.reshape(bsz * k, *x.shape).contiguous(), tbb, *params)
            return (y, ty.reshape(bsz, k, *y.shape)), (None, 0)
        if fu_bd is None and fd_bd is None and b_bd is None and tb_bd is None:
            # A batch of x: images [B * N, ...], tangents [K, B * N, ...].
            xb = _batched(x, x_bd, bsz)
            txb = _batched(tx, tx_bd, bsz)  # [B, K, N, C, H, W]
            k, n = txb.shape[1], xb.shape[1]
            y, ty = op(
                xb.reshape(bsz * n, *xb.shape[2:]).contiguous(),
                fu,
                fd,
                b,
                txb.transpose(0, 1).reshape(k, bsz * n, *txb.shape[3:]).contiguous(),
                tb,
                *params,
            )
            y = y.reshape(bsz, n, *y.shape[1:])
            return (y, ty.reshape(k, bsz, n, *ty.shape[2:])), (0, 1)
        return _vmap_loop(op, info, in_dims[:6], (x, fu, fd, b, tx, tb, *params))
