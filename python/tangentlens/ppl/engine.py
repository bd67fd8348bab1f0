"""The per-batch computation of PPL: images through the protocol's pipeline (range, quantisation, RGB,
crop, resize), the latent path points in each peer's arithmetic, and one distance per sample by finite
differences or the exact JVP, with the first batch's probes."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tangentlens import paths
from tangentlens._fingerprint import fingerprint_of
from tangentlens.distances import (
    PEER_PRESETS,
    L2Distance,
    check_distance_output,
    evaluate,
    make_distance,
    preset_distance,
)
from tangentlens.generators.adapters import GeneratorAdapter
from tangentlens.generators.outputs import (
    TO_UNIT,
    GeneratorOutputError,
    RangeMonitor,
    check_determinism,
    check_finite_images,
    check_images,
)
from tangentlens.jvp import _precision
from tangentlens.jvp import jvp as _engine_jvp
from tangentlens.lpips import LPIPS, NvidiaTorchScriptLPIPS, as_rgb, unchecked_range
from tangentlens.ppl.protocol import DegenerateResultWarning, FiniteDifferenceWarning, PPLProtocol

# ---- images ---------------------------------------------------------------------------------------------


@dataclass
class _Pipeline:
    """Generator output -> the distance's input, and the same linear map for tangents."""

    protocol: PPLProtocol
    output_range: str
    resolution: int | None
    rgb: bool  # repeat 1 channel to 3 (LPIPS)
    float_dtype: torch.dtype = torch.float32  # uint8 images become this (the distance's dtype)
    monitor: RangeMonitor | None = None  # the values against the declared range, one warning per run

    def check(
        self, x: torch.Tensor, start: int, what: str = "generator output", pairs: bool = False
    ) -> torch.Tensor:
        """Images for the distance (the adapter checked the type, rows and dtype): [N, 1 or 3, H, W],
        finite (NaN and inf named, with the sample indices; ``pairs``: the two images of each sample)."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise GeneratorOutputError(
                f"{what}: expected images [N, 1 or 3, H, W], got shape {tuple(x.shape)}"
            )
        check_finite_images(x, start, what, pairs)
        return x

    def to_unit(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Native range -> [-1, 1] (float, at least float32: a float16 generator's images are not rounded
        again by the distance), quantised to uint8 levels first when the protocol says so."""
        if self.monitor is not None:
            self.monitor.observe(x, start)
        if x.dtype == torch.uint8:
            return x.to(self.float_dtype) / 127.5 - 1.0
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        a, b = TO_UNIT[self.output_range]
        x = x * a + b if (a, b) != (1.0, 0.0) else x
        if self.protocol.quantize_uint8:
            x = ((x + 1.0) * 127.5).round().clamp(0, 255) / 127.5 - 1.0
        return x

    def tangent_scale(self) -> float:
        return TO_UNIT[self.output_range][0]

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """Channels, crop and resize: linear maps applied alike to images and tangents."""
        if self.rgb:
            x = as_rgb(x)  # the one rule for grey images (LPIPS applies it too)
        full_res = self.resolution or x.shape[2]
        if self.protocol.crop:
            if x.shape[2] != x.shape[3]:
                raise ValueError(f"crop: expected square images, got {tuple(x.shape[2:])}")
            c = x.shape[2] // 8
            x = x[:, :, c * 3 : c * 7, c * 2 : c * 6]
        r = self.protocol.resize
        if r == "box256":
            # NVIDIA: factor from the generator's resolution (also after the crop)
            factor = full_res // 256
            if factor > 1:
                n, ch, h, w = x.shape
                x = x.reshape(n, ch, h // factor, factor, w // factor, factor).mean(dim=(3, 5))
        elif r.startswith("area_or_bilinear:"):
            s = int(r.split(":")[1])
            if x.shape[-1] > s and x.shape[-2] > s:
                x = F.interpolate(x, size=(s, s), mode="area")
            else:
                x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        elif r.startswith("bilinear:"):
            s = int(r.split(":")[1])
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        return x


# ---- distances ------------------------------------------------------------------------------------------


def _distance_tangent_sq(distance: Callable, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``|d/ds e(x + s v)|^2`` at s = 0 per sample: the eps -> 0 limit of ``d(x, x + eps v) / eps^2``."""
    if isinstance(distance, LPIPS):
        return distance.tangent_norms(x, v.unsqueeze(1))[:, 0]
    if isinstance(distance, L2Distance):
        return v.flatten(1).square().sum(1)
    embed = getattr(distance, "embed", None)
    if callable(embed):
        _, te = _engine_jvp(embed, x, v.unsqueeze(1), chunk_size=1)
        return te.flatten(2).square().sum(2)[:, 0]

    # A distance without an embedding: half its second directional derivative at x1 = x (exact for a
    # squared Euclidean distance of any embedding).
    def along(s: torch.Tensor) -> torch.Tensor:
        return check_distance_output(distance(x, x + s.reshape(-1, 1, 1, 1) * v), x.shape[0])

    def first(s: torch.Tensor) -> torch.Tensor:
        return torch.func.jvp(along, (s,), (torch.ones_like(s),))[1]

    s0 = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    return 0.5 * torch.func.jvp(first, (s0,), (torch.ones_like(s0),))[1]


def _resolve_distance(
    distance: object, protocol: PPLProtocol, device: torch.device, preset: str | None
) -> Callable:
    if distance == "auto" and preset in PEER_PRESETS:  # a peer's number: its LPIPS, never pixels
        d = preset_distance(preset, eps_mode=protocol.lpips_eps_mode, method=protocol.method)
    elif isinstance(distance, str) and (distance.startswith("lpips-") or distance == "auto"):
        d = make_distance(distance, eps_mode=protocol.lpips_eps_mode)
    else:
        d = make_distance(distance)  # type: ignore[arg-type]
    if isinstance(d, nn.Module):
        d = d.to(device)
    return d


def _describe_distance(distance: Callable) -> dict[str, Any]:
    """The distance in a result's config and a checkpoint: its name, eps convention, which weights (and a
    ``label`` saying both in a few words) and the fingerprint of its parameters (a module) or code,
    defaults and closure (a function)."""
    if isinstance(distance, L2Distance):
        return {"name": "l2", "label": "l2 (pixels)"}
    fp = fingerprint_of(distance)
    if isinstance(distance, LPIPS):
        out = {"name": f"lpips-{distance.net}", "eps": distance.eps, "eps_mode": distance.eps_mode}
        out["label"] = f"lpips-{distance.net} v0.1 ({distance.weights_label()})"
        out["weights"] = distance.weights_info
    elif isinstance(distance, NvidiaTorchScriptLPIPS):
        out = {"name": "lpips-vgg16-nvidia", "label": f"lpips-vgg16 ({distance.weights_label()})"}
        out["weights"] = distance.weights_info
    else:
        out = {"name": f"{type(distance).__module__}.{type(distance).__qualname__}"}
        out["label"] = out["name"]
    out["fingerprint"] = fp.digest
    if fp.unverified is not None:
        out["fingerprint_unverified"] = fp.unverified
    return out


# ---- the per-batch computation ----------------------------------------------------------------------------


def _nvidia_slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """NVIDIA's slerp of z (metrics/perceptual_path_length.py) in the latents' dtype, operation for
    operation: unit a and b, the angle's fraction t of the great circle through c = unit(b - <a, b> a),
    the result normalised again. ``t`` [N, 1]."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    cos = (a * b).sum(dim=-1, keepdim=True)
    angle = t * torch.acos(cos)
    c = b - cos * a
    c = c / c.norm(dim=-1, keepdim=True)
    p = a * torch.cos(angle) + c * torch.sin(angle)
    return p / p.norm(dim=-1, keepdim=True)


def _torchmetrics_slerp(a: torch.Tensor, b: torch.Tensor, s: torch.Tensor, unit: bool) -> torch.Tensor:
    """torchmetrics' raw-vector slerp (``_interpolate``, "slerp_any" / "slerp_unit") at positions s [N]
    (float64), in its operation order: coefficients sin((1 - s) w) / sin w and sin(s w) / sin w on the raw
    vectors, the lerp ``a + (b - a) s`` where a or b is zero or they are collinear."""
    tiny = 1e-7

    def unit_rows(x: torch.Tensor) -> torch.Tensor:
        return x / (x**2).sum(dim=-1, keepdim=True).sqrt().clamp_min(tiny)

    ua, ub = unit_rows(a), unit_rows(b)
    cos = (ua * ub).sum(dim=-1, keepdim=True)
    lerp_rows = (ua.norm(dim=-1, keepdim=True) < tiny) | (ub.norm(dim=-1, keepdim=True) < tiny)
    lerp_rows = lerp_rows | (cos > 1 - tiny) | (cos < -1 + tiny)
    omega = cos.acos()
    denom = omega.sin().clamp_min(tiny)
    w1, w0 = s.to(a.dtype).reshape(-1, 1), (1 - s).to(a.dtype).reshape(-1, 1)
    out = (w0 * omega).sin() / denom * a + (w1 * omega).sin() / denom * b
    out = torch.where(lerp_rows, a + (b - a) * w1, out)
    return unit_rows(out) if unit else out


@dataclass
class _Engine:
    gen: GeneratorAdapter
    protocol: PPLProtocol
    distance: Callable
    pipe: _Pipeline
    device: torch.device
    notes: list[str] = field(default_factory=list)
    first: bool = True  # the first batch is probed (determinism, quantisation, zero tangents)

    def _points(
        self, z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor, eps: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(p(t), p(t + eps))`` of the latent path in the arithmetic of the protocol's ``replay`` (the
        class docstring of :class:`PPLProtocol`): a peer's latents replay its samples bit for bit."""
        p, replay = self.protocol, self.protocol.replay
        peer_lerp = replay in ("torch_fidelity", "torchmetrics")
        if p.space == "z" and p.z_interp == "slerp":
            if replay == "nvidia":
                tt = t.to(z0.dtype).reshape(-1, 1)
                return _nvidia_slerp(z0, z1, tt), _nvidia_slerp(z0, z1, tt + eps)
            return paths.slerp(z0, z1, t), paths.slerp(z0, z1, t + eps)
        if p.space == "z" and p.z_interp in ("slerp_any", "slerp_any_unit"):  # torchmetrics' raw slerp
            unit = p.z_interp == "slerp_any_unit"
            if replay == "torchmetrics":
                at = _torchmetrics_slerp(z0, z1, t, unit)
                if not unit:  # torchmetrics' first image is G(z0) itself
                    at = torch.where((t == 0).reshape(-1, 1), z0, at)
                return at, _torchmetrics_slerp(z0, z1, t + eps, unit)
            return (
                paths.slerp_raw_with_tangent(z0, z1, t, unit=unit)[0],
                paths.slerp_raw_with_tangent(z0, z1, t + eps, unit=unit)[0],
            )
        shape = (-1, *([1] * (z0.ndim - 1)))
        if peer_lerp:  # a + (b - a) * t, the first point z0 itself at t = 0
            diff = z1 - z0
            return z0 + diff * t.to(z0.dtype).reshape(shape), z0 + diff * (t + eps).to(z0.dtype).reshape(
                shape
            )
        tt = t.to(z0.dtype).reshape(shape)
        return z0.lerp(z1, tt), z0.lerp(z1, tt + eps)

    def _path(
        self, z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor, c: torch.Tensor | None, eps: float | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(p(t), p(t + eps))``, or with ``eps=None`` ``(p(t), p'(t))``: the slerp of unit z, torchmetrics'
        slerp of raw z (``slerp_any``, normalised for ``slerp_any_unit``), else the lerp of z or of
        w = f(z) (over the whole [num_ws, w_dim] tensor), whose tangent is the difference."""
        if self.protocol.space == "w":
            z0, z1 = self.gen.mapping(torch.cat([z0, z1]), _cat2(c)).chunk(2)
        if eps is not None:
            return self._points(z0, z1, t, eps)
        if self.protocol.space == "z" and self.protocol.z_interp == "slerp":
            return paths.slerp_with_tangent(z0, z1, t)
        if self.protocol.space == "z" and self.protocol.z_interp in ("slerp_any", "slerp_any_unit"):
            return paths.slerp_raw_with_tangent(z0, z1, t, unit=self.protocol.z_interp == "slerp_any_unit")
        tt = t.to(z0.dtype).reshape(-1, *([1] * (z0.ndim - 1)))
        return z0.lerp(z1, tt), z1 - z0

    def distances(
        self,
        z0: torch.Tensor,
        z1: torch.Tensor,
        t: torch.Tensor,
        c: torch.Tensor | None,
        noise: Sequence[torch.Tensor] | None,
        start: int,
    ) -> torch.Tensor:
        p, gen, pipe = self.protocol, self.gen, self.pipe
        eps = p.epsilon
        z0, z1 = gen.transform_z(z0), gen.transform_z(z1)
        if p.method == "fd":
            with torch.no_grad(), _precision(p.precision, self.device):
                a, b = self._path(z0, z1, t, c, eps)
                args = (torch.cat([a, b]), _cat2(c), _cat2(noise), p.space)
                img = pipe.check(gen.image(*args), start, pairs=True)
                if self.first:
                    self._probe_fd(img, args)
                x = pipe.linear(pipe.to_unit(img, start))
                x0, x1 = x.chunk(2)
                with unchecked_range():  # the range was checked above, against the declared one
                    d = evaluate(self.distance, x0, x1).to(torch.float64) / eps**2
        else:
            with torch.no_grad():
                a, tan = self._path(z0, z1, t, c, None)
                if self.first:  # a plain call first: a failure names z_dim, uint8 output is refused here
                    probe = gen.image(a, c, noise, p.space)
                    check_images(probe, a.shape[0], gen.kind, differentiable=True)
            img, timg = gen.image_jvp(a, tan, c, noise, p.space, precision=p.precision)
            img = pipe.check(img, start)
            pipe.check(timg, start, "generator tangent")
            with torch.no_grad(), _precision(p.precision, self.device), unchecked_range():
                x = pipe.linear(pipe.to_unit(img, start))
                v = pipe.linear(timg.to(x.dtype) * pipe.tangent_scale())
                d = _distance_tangent_sq(self.distance, x, v).to(torch.float64)
            if self.first:
                self._probe_jvp(img, timg)
        bad = ~torch.isfinite(d)
        if bool(bad.any()):
            idx = (torch.nonzero(bad).flatten() + start).tolist()
            kind = "NaN" if bool(torch.isnan(d).any()) else "inf"
            raise FloatingPointError(
                f"distance: {kind} for sample indices {idx[:20]} (the images are finite: the distance "
                "overflowed or divided by zero)"
            )
        quantised = p.quantize_uint8 or any("quantised images" in n for n in self.notes)
        if self.first and p.method == "fd" and d.numel() > 1 and not bool(d.any()) and not quantised:
            x0 = x.chunk(2)[0]
            if not bool((x0 == x0[:1]).all()):
                self._warn(
                    "every distance of the first batch is exactly 0 while the images differ between "
                    f"samples: an eps={eps:g} step does not change the images (quantised or detached "
                    "output); this is not the path length. Return float images that move with the latents",
                    DegenerateResultWarning,
                )
        self.first = False
        return d

    def _warn(self, msg: str, category: type[Warning]) -> None:
        self.notes.append(msg)
        warnings.warn(msg, category, stacklevel=5)

    def _probe_fd(self, img: torch.Tensor, args: tuple) -> None:
        """First batch under finite differences: the same latents again must give the same images, and a
        quantised output (uint8, or integral values in [0, 255]) is worth one warning."""
        again = self.gen.image(*args)
        a_img, b_img = img.chunk(2)
        note = check_determinism(img, again, b_img.double() - a_img.double(), self.gen.kind)
        if note is not None:
            self.notes.append(note)
        if self.protocol.quantize_uint8:
            return  # the protocol's own quantisation, warned about when it was resolved
        quantised = img.dtype == torch.uint8 or (
            self.gen.output_range == "0_255" and img.is_floating_point() and torch.equal(img, img.round())
        )
        if quantised:
            self._warn(
                f"method='fd': the generator returns quantised images ({img.dtype}, 256 levels): an eps="
                f"{self.protocol.epsilon:g} step mostly rounds to the same level (distances 0, or 37-118x "
                "off); this reproduces a uint8 protocol such as torch-fidelity's, not the path length. For "
                "the exact limit return the float images before the quantisation (declare their range with "
                "output_range=) and use method='jvp'",
                FiniteDifferenceWarning,
            )

    def _probe_jvp(self, img: torch.Tensor, timg: torch.Tensor) -> None:
        """First batch under the JVP: tangents that are exactly 0 for every sample while the images vary
        mean the output does not move differentiably (rounding or a detach inside the generator)."""
        if bool(timg.any()) or img.shape[0] < 2 or bool((img == img[:1]).all()):
            return
        self._warn(
            "method='jvp': the generator's image tangents are exactly 0 for every sample of the first batch "
            "while its images vary: the output does not depend differentiably on the latents (rounding, "
            "quantisation or a detach inside it), so the exact path length comes out 0. Return float images "
            "that carry the derivative, or use method='fd' to measure the quantised output",
            DegenerateResultWarning,
        )

    def sample_distances(
        self, seed: int, start: int, count: int, labels: torch.Tensor | Callable | None = None
    ) -> torch.Tensor:
        """The distances of samples ``start .. start + count - 1``: latents, t, labels and noise of sample i
        from (seed, i) only."""
        p, gen, dev = self.protocol, self.gen, self.device
        s = paths.sample(
            seed,
            start,
            count,
            gen.z_dim,
            interp="slerp" if p.space == "z" and p.z_interp == "slerp" else "lerp",
            sampling=p.sampling,
            eps=p.epsilon,
            dtype=gen.dtype,
            device=dev,
            step=False,
            tangent=False,
        )
        assert s.z0 is not None and s.z1 is not None
        c = gen.labels(seed, start, count, labels, dev)
        nz = gen.noise(seed, start, count, dev)
        return self.distances(s.z0, s.z1, s.t, c, nz, start)


def _cat2(x: Any) -> Any:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return torch.cat([x, x])
    return [torch.cat([n, n]) for n in x]
