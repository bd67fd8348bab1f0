"""The operator behind the metric tensor ``M(z) = JᵀJ`` of ``F = φ ∘ G`` (SPEC 1, 2): products with J and Jᵀ
at a batch of latent points, shared by :mod:`tangentlens.spectra` and :mod:`tangentlens.geodesics`."""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any

import torch

from tangentlens import ops
from tangentlens._checks import check_choice as _check_choice
from tangentlens._checks import check_int as _check_int
from tangentlens._checks import check_tensor, nonfinite_rows
from tangentlens.generators.adapters import GeneratorAdapter, OutputRange, adapt, as_generator
from tangentlens.generators.outputs import TO_UNIT, RangeMonitor, call_generator, check_finite_images
from tangentlens.jvp import PRECISIONS, _precision
from tangentlens.jvp import jvp as _jvp
from tangentlens.lpips import LPIPS, unchecked_range
from tangentlens.reference.lpips import normalization_tangent

# ---- the operator: F, J V, Jᵀ U and Grams at a batch of points -----------------------------------------


# as_generator's adapters, one per generator object (an NVIDIA object is converted once, and jvp's
# memory probe runs once per latent function); plain callables whose z_dim comes from the points are
# adapted per call instead
_adapters: weakref.WeakKeyDictionary[Any, GeneratorAdapter] = weakref.WeakKeyDictionary()


def _adapter(obj: object, z_dim: int | None, name: str = "fn_or_generator") -> GeneratorAdapter:
    if isinstance(obj, GeneratorAdapter):
        return obj
    try:
        return _adapters[obj]
    except (KeyError, TypeError):
        pass
    if not callable(obj) and not (hasattr(obj, "mapping") and hasattr(obj, "synthesis")):
        raise TypeError(
            f"{name}: expected a generator (anything tangentlens.generators.as_generator takes: "
            f"mapping/synthesis, decode, ...) or a callable z -> tensor, got {type(obj).__name__}"
        )
    try:
        ad = as_generator(obj)
    except ValueError as exc:  # a plain callable without z_dim: the points' width
        if z_dim is None or "z_dim" not in str(exc):
            raise
        return as_generator(obj, z_dim=z_dim)
    try:
        _adapters[obj] = ad
    except TypeError:  # not weak-referenceable
        pass
    return ad


def _lpips_embed_jvp(lp: LPIPS, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Tangents [N, K, F] of ``lp.embed`` at images x along v [N, K, 3, H, W]: the trunk's stacked pass
    (as in ``LPIPS.tangent_norms``) and the normalisation tangent of SPEC 3, else torch.func."""
    mode = ops._eps_mode(lp.eps_mode)
    try:
        taps = lp._stacked_taps(x, v)
    except NotImplementedError:  # trunks without stacked rules (SqueezeNet)
        return _jvp(lp.embed, x, v, chunk_size=v.shape[1])[1].flatten(2)
    parts = []
    for f, w in zip(taps, lp.linear_weights, strict=True):
        f0, t = f[:, 0], f[:, 1:]
        scale = torch.sqrt(w.to(f.dtype) / (f.shape[-1] * f.shape[-2])).reshape(1, 1, -1, 1, 1)
        parts.append((scale * normalization_tangent(f0, t, lp.eps, mode)).flatten(2))
    return torch.cat(parts, dim=2)


def _distance_name(distance: object) -> str:
    if distance is None or isinstance(distance, str):
        return str(distance)
    if isinstance(distance, LPIPS):
        return f"LPIPS({distance.net}, eps_mode={distance.eps_mode})"
    return type(distance).__name__


def _width(z: object) -> int | None:
    """The points' width: the latent dimension of a plain callable that does not declare one."""
    return z.shape[-1] if isinstance(z, torch.Tensor) and z.dim() >= 1 else None


class _Operator:
    """Products with J (D×d) of F = φ ∘ g at points x [B, d]: g is the generator as a function of its
    space (:meth:`GeneratorAdapter.latent_function`: images in [-1, 1]), φ the distance's embedding (None:
    identity)."""

    def __init__(
        self,
        fn_or_generator: object,
        distance: object,
        space: str,
        precision: str,
        chunk_size: int | None,
        z_dim: int | None = None,
        name: str = "fn_or_generator",
    ) -> None:
        _check_choice(space, "space", ("z", "w", "w+"))
        _check_choice(precision, "precision", PRECISIONS)
        if chunk_size is not None:
            _check_int(chunk_size, "chunk_size", 1)
        self.precision, self.chunk_size, self.space = precision, chunk_size, space
        self.adapter = _adapter(fn_or_generator, z_dim, name)
        self.gen, self.dim = self.adapter.latent_function(space)  # type: ignore[arg-type]
        if isinstance(distance, str) and distance != "l2":
            from tangentlens.distances import make_distance

            distance = make_distance(distance)
        self.distance = distance  # as resolved: what a run's fingerprint identifies
        self.lpips: LPIPS | None = distance if isinstance(distance, LPIPS) else None
        self.embed: Callable[[torch.Tensor], torch.Tensor] | None = None
        if distance is None or distance == "l2" or type(distance).__name__ == "L2Distance":
            self.embed = None
        elif hasattr(distance, "embed") and callable(distance.embed):
            self.embed = distance.embed
        else:
            raise TypeError(
                "distance: expected None, 'l2', an LPIPS name or a module with embed(x) -> [N, F] "
                f"(a squared Euclidean distance of an embedding), got {type(distance).__name__}"
            )
        self.distance_name = _distance_name(distance)

    def from_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Points of this operator's space for latents z [B, z_dim]: z itself, its w ([B, w_dim], the
        mapping's first row) or its flattened w+ ([B, num_ws * w_dim])."""
        if self.space == "z":
            return z
        with torch.no_grad():
            ws = self.adapter.mapping(z, None)
        return ws[:, 0] if self.space == "w" else ws.flatten(1)

    def check_points(self, z: object, name: str = "z") -> torch.Tensor:
        z = check_tensor(z, name, shape="[B, d]", floating=True)
        if self.space == "w+" and z.dim() == 3:
            z = z.flatten(1)
        if z.dim() != 2 or z.shape[0] < 1:
            raise ValueError(f"{name}: expected points [B, d] with B >= 1, got shape {tuple(z.shape)}")
        if z.shape[1] != self.dim:
            raise ValueError(
                f"{name}: expected [B, {self.dim}] for space {self.space!r}, got {tuple(z.shape)}"
            )
        bad = nonfinite_rows(z, name)
        if bad is not None:
            raise ValueError(f"{name}: expected finite values, got {bad.removeprefix(name + ': ')}")
        return z.detach().contiguous()

    # F itself (reverse mode goes through it)
    def F(self, x: torch.Tensor) -> torch.Tensor:
        out = self.gen(x)
        return (out if self.embed is None else self.embed(out)).flatten(1)

    def _image_jvp(self, x: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.adapter.jvp_context():
            return _jvp(self.gen, x, V.to(x.dtype), chunk_size=self.chunk_size, precision=self.precision)  # type: ignore[return-value]

    def jv(self, x: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        """J v for V [B, k, d] -> [B, k, D] (x's dtype)."""
        img, timg = self._image_jvp(x, V)
        return self._embed_tangents(x, img, timg)

    def value_and_jv(self, x: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(F(x) [B, D], J v [B, k, D])`` from one pass of the generator (the embedding of the images
        costs one more pass of φ)."""
        img, timg = self._image_jvp(x, V)
        if self.embed is None:
            return img.flatten(1), timg.flatten(2)
        with torch.no_grad(), _precision(self.precision, x.device):  # type: ignore[arg-type]
            value = self.embed(img).flatten(1)
        return value, self._embed_tangents(x, img, timg)

    def _embed_tangents(self, x: torch.Tensor, img: torch.Tensor, timg: torch.Tensor) -> torch.Tensor:
        if self.embed is None:
            return timg.flatten(2)
        chunk = self.chunk_size or timg.shape[1]
        outs = []
        with _precision(self.precision, x.device):  # type: ignore[arg-type]
            for s in range(0, timg.shape[1], chunk):
                t = timg[:, s : s + chunk].contiguous()
                if self.lpips is not None:
                    outs.append(_lpips_embed_jvp(self.lpips, img, t))
                else:
                    outs.append(_jvp(self.embed, img, t, chunk_size=t.shape[1])[1].flatten(2))
        return torch.cat(outs, dim=1)

    def gram(self, x: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        """<J v_i, J v_j> [B, k, k] in float64."""
        k = V.shape[1]
        if self.lpips is not None and (self.chunk_size is None or self.chunk_size >= k):
            img, timg = self._image_jvp(x, V)
            with _precision(self.precision, x.device):  # type: ignore[arg-type]
                return self.lpips.tangent_norms(img, timg, gram=True).double()
        E = self.jv(x, V).double()
        return E @ E.transpose(1, 2)

    def sqnorms(self, x: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        """|J v|² [B, k] in float64 (LPIPS: the fused tangent-norm kernel)."""
        if self.lpips is not None:
            img, timg = self._image_jvp(x, V)
            chunk = self.chunk_size or timg.shape[1]
            with _precision(self.precision, x.device):  # type: ignore[arg-type]
                parts = [
                    self.lpips.tangent_norms(img, timg[:, s : s + chunk].contiguous()).double()
                    for s in range(0, timg.shape[1], chunk)
                ]
            return torch.cat(parts, dim=1)
        return self.jv(x, V).double().square().sum(-1)

    def jtu(self, x: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
        """Jᵀ u for U [B, k, D] -> [B, k, d]: one reverse pass over the points replicated k times (the
        generator's per-sample ops make the copies independent; torch.func.vmap over vjp does not pass
        through modules that call requires_grad_)."""
        B, k = U.shape[:2]
        chunk = self.chunk_size or k
        outs = []
        for s in range(0, k, chunk):
            kc = min(chunk, k - s)
            xr = x.detach().repeat_interleave(kc, dim=0).requires_grad_(True)
            with torch.enable_grad(), _precision(self.precision, x.device):  # type: ignore[arg-type]
                out = self.F(xr)
                (g,) = torch.autograd.grad(out, xr, U[:, s : s + kc].reshape(B * kc, -1).to(out.dtype))
            outs.append(g.reshape(B, kc, -1))
        return torch.cat(outs, dim=1)

    def mv(self, x: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        """M v = Jᵀ(J v) for V [B, k, d] -> [B, k, d] float64."""
        return self.jtu(x, self.jv(x, V)).double()


# ---- the generator at the boundary: explicit z_dim / output_range, the first-batch probe ------------


def _generator(obj: object, z_dim: int | None, output_range: OutputRange | None, width: int | None) -> object:
    """``obj`` itself (adapted by ``_Operator``, cached per object), or with an explicit ``z_dim`` /
    ``output_range`` its adapter built with them (checked against an adapter's own values); a plain
    callable given only ``output_range`` takes the points' ``width`` as its z_dim."""
    if z_dim is None and output_range is None:
        return obj
    return adapt(obj, z_dim=z_dim, output_range=output_range, z_dim_hint=width)


def _ranges_checked_here(fn: Callable) -> Callable:
    """The engine compares the images with the declared range itself (``_probe``: one warning per run,
    never an error), so LPIPS's own input-range check is off inside ``fn``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with unchecked_range():
            return fn(*args, **kwargs)

    return wrapper


def _probe(op: _Operator, x: torch.Tensor, first_index: int, monitor: RangeMonitor | None) -> torch.Tensor:
    """The generator's images at the points (in [-1, 1], returned), once, by a plain call: a failure inside
    it names the points' shape (and z_dim), NaN / inf images are named with the points' indices, and the
    values are compared with the declared output range (one warning per run, never an error)."""
    ad = op.adapter
    with torch.no_grad():
        img = call_generator(op.gen, x, ad.kind, op.space, ad.z_dim)
    check_finite_images(img, first_index, "generator output")  # type: ignore[arg-type]
    if monitor is not None:
        a, b = TO_UNIT[ad.output_range]
        monitor.observe((img - b) / a, first_index)  # type: ignore[operator]
    return img  # type: ignore[return-value]
