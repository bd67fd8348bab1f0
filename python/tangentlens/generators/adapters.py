"""Generator protocol adapters: one interface for the PPL engine and the spectra over the generators
researchers have.

:func:`as_generator` recognises

* StyleGAN-style objects (``mapping``/``synthesis``, ``z_dim``, ``c_dim``, ``num_ws``): tangentlens'
  :class:`~tangentlens.models.stylegan2.StyleGAN2Generator` (native kernels, stacked forward rules, per-sample
  noise) and :class:`~tangentlens.models.stylegan3.StyleGAN3Generator` (no noise inputs); NVIDIA's own
  objects are converted to them when their architecture matches, else run as they are with constant noise
  buffers and, for JVPs, NVIDIA's custom ops switched to their reference paths;
* torch-fidelity ``GenerativeModelBase`` (``z_size``, ``z_type``, ``num_classes``; uint8 output);
* torchmetrics-style generators (``sample(n)`` plus ``forward(z)`` returning images in [0, 255]);
* VAE decoders (``decode(z)`` with ``z_dim`` or ``latent_dim``);
* plain callables ``z -> image`` (give ``z_dim``).

Every adapter returns images in their native range (``output_range``) and, for JVPs, images and their
tangents. Labels (``c``) are one-hot rows for NVIDIA-style generators and class indices for torchmetrics /
torch-fidelity ones, as each expects.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import torch
from torch import nn

from tangentlens import ops
from tangentlens._checks import check_choice, check_int
from tangentlens._fingerprint import fingerprint, fingerprint_of
from tangentlens.generators.nvidia import convert_nvidia_generator, nvidia_reference_ops
from tangentlens.generators.outputs import TO_UNIT, call_generator, check_images
from tangentlens.jvp import Precision
from tangentlens.jvp import jvp as _engine_jvp
from tangentlens.models.stylegan2 import StyleGAN2Generator
from tangentlens.models.stylegan3 import StyleGAN3Generator

__all__ = ["GeneratorAdapter", "OutputRange", "adapt", "as_generator", "fingerprint"]

OutputRange = Literal["-1_1", "0_1", "0_255"]
_RANGES = ("-1_1", "0_1", "0_255")
NOISE_STREAM = 3  # counter-RNG streams 0-2 are z0, z1, t (tangentlens.paths)
LABEL_STREAM = 4


class _Bound:
    """``fn(x)`` with the per-batch labels and noise bound; ``forward_jvp`` when the generator has stacked
    rules (tangentlens.jvp uses it)."""

    def __init__(self, fn: Callable, fwd_jvp: Callable | None) -> None:
        self._fn = fn
        if fwd_jvp is not None:
            self.forward_jvp = fwd_jvp

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._fn(x)


class GeneratorAdapter:
    """The generator interface of the engines. Subclasses set the attributes and implement ``_image``."""

    z_dim: int
    c_dim: int = 0  # one-hot label width (NVIDIA style); 0 = unconditional
    num_classes: int = 0  # classes for index labels (torchmetrics / torch-fidelity style)
    label_kind: Literal["none", "onehot", "index"] = "none"
    output_range: OutputRange = "-1_1"
    has_w: bool = False
    z_type: Literal["normal", "unit", "uniform_0_1"] = "normal"
    kind: str = "callable"

    def __init__(self, module: object) -> None:
        self.module = module
        self.notes: list[str] = []

    # -- latents, labels, noise ------------------------------------------------------------------------
    def transform_z(self, z: torch.Tensor) -> torch.Tensor:
        """Standard normals -> this generator's prior (torch-fidelity's z types)."""
        if self.z_type == "unit":
            return z / z.norm(dim=1, keepdim=True)
        if self.z_type == "uniform_0_1":
            return torch.special.ndtr(z)  # Phi(N(0, 1)) ~ U[0, 1]
        return z

    def labels(
        self, seed: int, start: int, count: int, source: torch.Tensor | Callable | None, device: torch.device
    ) -> torch.Tensor | None:
        """Labels of samples ``start .. start + count - 1`` from ``(seed, i)`` only: uniform classes, or rows
        of ``source`` [L, c_dim] chosen uniformly (e.g. a dataset's labels), or ``source(indices)``."""
        if self.label_kind == "none":
            if source is not None:
                raise ValueError(f"labels: the generator ({self.kind}) is unconditional, got labels")
            return None
        idx = torch.arange(start, start + count, device=device)
        if callable(source) and not isinstance(source, torch.Tensor):
            c = source(idx)
            if not isinstance(c, torch.Tensor) or c.shape[0] != count:
                raise ValueError(
                    f"labels: the callable must return [{count}, ...] labels, got {type(c).__name__}"
                )
            return c.to(device)
        u = ops.philox_normal(seed, start, count, 1, stream=LABEL_STREAM, dtype=torch.float64, device=device)
        u = torch.special.ndtr(u[:, 0]).clamp(0, 1 - 1e-16)
        if source is not None:
            if not isinstance(source, torch.Tensor) or source.ndim != 2:
                raise ValueError(
                    "labels: expected None, a callable or a tensor [L, c_dim], "
                    f"got {getattr(source, 'shape', source)}"
                )
            return source.to(device)[(u * source.shape[0]).long()]
        n = self.c_dim if self.label_kind == "onehot" else self.num_classes
        cls = (u * n).long()
        if self.label_kind == "index":
            return cls
        return torch.nn.functional.one_hot(cls, n).to(self.dtype)

    def noise(self, seed: int, start: int, count: int, device: torch.device) -> list[torch.Tensor] | None:
        """Per-sample noise inputs from ``(seed, i)``, or None (no noise, or noise fixed by the generator)."""
        return None

    dtype_override: torch.dtype | None = None

    @property
    def param_dtype(self) -> torch.dtype | None:
        """The dtype latents are given in: set by ``as_generator(dtype=)``, else the module's parameters'."""
        if self.dtype_override is not None:
            return self.dtype_override
        if isinstance(self.module, nn.Module):
            for p in self.module.parameters():
                if p.is_floating_point():
                    return p.dtype
        return None

    @property
    def dtype(self) -> torch.dtype:
        return self.param_dtype or torch.float32

    @property
    def device(self) -> torch.device:
        if isinstance(self.module, nn.Module):
            for t in list(self.module.parameters()) + list(self.module.buffers()):
                return t.device
        return torch.device("cpu")

    # -- images ----------------------------------------------------------------------------------------
    def mapping(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        raise ValueError(f"space='w': the generator ({self.kind}) has no mapping network; use space='z'")

    def _checked(self, fn: Callable, differentiable: bool) -> Callable:
        """``fn`` with its output checked at the boundary (:func:`.outputs.check_images`): one tensor, one
        row per latent, float (uint8 only where no derivative is taken)."""
        kind = self.kind

        def call(x: torch.Tensor) -> torch.Tensor:
            return check_images(fn(x), x.shape[0], kind, differentiable=differentiable)

        return call

    def image(
        self, x: torch.Tensor, c: torch.Tensor | None, noise: Sequence[torch.Tensor] | None, space: str
    ) -> torch.Tensor:
        """Images from latents ``x`` (z [N, z_dim], or w [N, num_ws, w_dim] for space 'w'), checked; a
        failure inside the generator names the latents' shape (and z_dim)."""
        out = call_generator(self._fn(space, c, noise), x, self.kind, space, self.z_dim)
        return check_images(out, x.shape[0], self.kind, differentiable=False)

    def image_jvp(
        self,
        x: torch.Tensor,
        tangent: torch.Tensor,
        c: torch.Tensor | None,
        noise: Sequence[torch.Tensor] | None,
        space: str,
        precision: Precision = "fp32",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and their tangents ``[N, C, H, W]`` along one tangent per sample."""
        fn = _Bound(self._checked(self._fn(space, c, noise), True), self._rules(space, c, noise))
        with self.jvp_context():
            img, timg = _engine_jvp(fn, x, tangent.unsqueeze(1), chunk_size=1, precision=precision)
        return img, timg[:, 0]

    def latent_function(self, space: Literal["z", "w", "w+"]) -> tuple[Callable, int]:
        """``x [N, dim] -> images in [-1, 1]`` with constant noise and no labels, and dim: x is z, one w
        broadcast to all num_ws layers (``"w"``) or the flattened ws (``"w+"``). The function carries
        ``forward_jvp`` (for :func:`tangentlens.jvp`) when the generator has stacked rules. Cached per
        space, so jvp's memory probe runs once."""
        cache: dict[str, tuple[Callable, int]] = self.__dict__.setdefault("_latent_functions", {})
        if space in cache:
            return cache[space]
        if space not in ("z", "w", "w+"):
            raise ValueError(f"space: expected 'z', 'w' or 'w+', got {space!r}")
        if space != "z" and not self.has_w:
            raise ValueError(
                f"space: {space!r} needs a generator with mapping/synthesis, got a {self.kind}; use "
                "space='z' (the function's own input)"
            )
        fn = self._checked(self._fn("z" if space == "z" else "w", None, None), True)
        rules = self._rules(space[:1], None, None)
        num_ws, w_dim = getattr(self, "num_ws", 0), getattr(self, "w_dim", 0)
        if space != "z" and (num_ws < 1 or w_dim < 1):
            raise ValueError(
                f"space: {space!r} needs a generator with num_ws and w_dim attributes, got "
                f"num_ws={num_ws}, w_dim={w_dim}"
            )

        def to_ws(x: torch.Tensor) -> torch.Tensor:  # [..., dim] -> [..., num_ws, w_dim]
            if space == "w":
                return x.unsqueeze(-2).expand(*x.shape[:-1], num_ws, w_dim)
            return x.reshape(*x.shape[:-1], num_ws, w_dim)

        a, b = TO_UNIT[self.output_range]

        def f(x: torch.Tensor) -> torch.Tensor:
            img = fn(x if space == "z" else to_ws(x))
            return img if (a, b) == (1.0, 0.0) else img * a + b

        fwd = None
        if rules is not None:

            def fwd(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                img, timg = rules(x, t) if space == "z" else rules(to_ws(x), to_ws(t))
                return (img, timg) if (a, b) == (1.0, 0.0) else (img * a + b, timg * a)

        dim = {"z": self.z_dim, "w": w_dim, "w+": num_ws * w_dim}[space]
        cache[space] = (_Bound(f, fwd), dim)
        return cache[space]

    def _fn(self, space: str, c: torch.Tensor | None, noise: Sequence[torch.Tensor] | None) -> Callable:
        raise NotImplementedError

    def _rules(
        self, space: str, c: torch.Tensor | None, noise: Sequence[torch.Tensor] | None
    ) -> Callable | None:
        return None

    def jvp_context(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def describe(self) -> dict[str, Any]:
        """What identifies the generator in a result's config and a checkpoint: kind, class, z_dim, labels,
        range, parameter dtype and the fingerprint of its parameters (a module) or code (a function);
        ``fingerprint_unverified`` says why a fingerprint may miss a change (resuming then needs an
        explicit override)."""
        fp = fingerprint_of(self.module)
        out = {
            "kind": self.kind,
            "class": f"{type(self.module).__module__}.{type(self.module).__qualname__}",
            "z_dim": self.z_dim,
            "labels": self.label_kind,
            "output_range": self.output_range,
            "dtype": str(self.dtype).removeprefix("torch."),
            "fingerprint": fp.digest,
            "notes": list(self.notes),
        }
        if fp.unverified is not None:
            out["fingerprint_unverified"] = fp.unverified
        return out


class StyleGANAdapter(GeneratorAdapter):
    """Objects with ``mapping``/``synthesis`` (NVIDIA's interface)."""

    has_w = True

    def __init__(self, G: Any, *, source: str = "tangentlens") -> None:
        super().__init__(G)
        self.ours = isinstance(G, StyleGAN2Generator)
        self.kind = "stylegan2 (tangentlens)" if self.ours else "stylegan (NVIDIA-style object)"
        if source != "tangentlens":
            self.kind = f"stylegan2 (tangentlens, {source})"
        self.z_dim = int(G.z_dim)
        self.c_dim = int(getattr(G, "c_dim", 0))
        self.label_kind = "onehot" if self.c_dim > 0 else "none"
        self.num_ws = int(G.num_ws)
        self.w_dim = int(getattr(G, "w_dim", 0))
        if not self.ours:
            self.notes.append(
                "noise: the generator's constant noise buffers (noise_mode='const'), not per sample"
            )

    def noise(self, seed: int, start: int, count: int, device: torch.device) -> list[torch.Tensor] | None:
        if not self.ours:
            return None
        shapes = self.module.synthesis.noise_shapes()
        total = sum(h * w for h, w in shapes)
        flat = ops.philox_normal(
            seed, start, count, total, stream=NOISE_STREAM, dtype=self.dtype, device=device
        )
        out, i = [], 0
        for h, w in shapes:
            out.append(flat[:, i : i + h * w].reshape(count, 1, h, w))
            i += h * w
        return out

    def mapping(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        return self.module.mapping(z, c)

    def _synth_kwargs(self, noise: Sequence[torch.Tensor] | None) -> dict[str, Any]:
        kw: dict[str, Any] = {"noise_mode": "const", "force_fp32": True}
        if noise is not None:
            kw["noise"] = noise
        return kw

    def _fn(self, space: str, c: torch.Tensor | None, noise: Sequence[torch.Tensor] | None) -> Callable:
        G, kw = self.module, self._synth_kwargs(noise)
        if space == "w":
            return lambda w: G.synthesis(w, **kw)
        return lambda z: G.synthesis(G.mapping(z, c), **kw)

    def _rules(
        self, space: str, c: torch.Tensor | None, noise: Sequence[torch.Tensor] | None
    ) -> Callable | None:
        if not self.ours:
            return None
        G = self.module

        def fwd(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if space == "w":
                return G.synthesis.forward_jvp(x, t, noise_mode="const", noise=noise)
            return G.forward_jvp(x, t, c=c, noise_mode="const", noise=noise)

        return fwd

    def jvp_context(self) -> contextlib.AbstractContextManager:
        if self.ours:
            return contextlib.nullcontext()
        return _nvidia_reference_ops(self.module, self.notes)


class StyleGAN3Adapter(StyleGANAdapter):
    """tangentlens' StyleGAN3Generator: StyleGANAdapter without noise inputs (StyleGAN3's synthesis has none),
    its JVPs by the stacked forward rules."""

    def __init__(self, G: StyleGAN3Generator, *, source: str = "tangentlens") -> None:
        super().__init__(G, source=source)
        self.ours = True
        self.notes.clear()
        self.kind = (
            "stylegan3 (tangentlens)" if source == "tangentlens" else f"stylegan3 (tangentlens, {source})"
        )

    def noise(self, seed: int, start: int, count: int, device: torch.device) -> list[torch.Tensor] | None:
        return None

    def _synth_kwargs(self, noise: Sequence[torch.Tensor] | None) -> dict[str, Any]:
        return {"noise_mode": "const", "force_fp32": True}

    def _rules(
        self, space: str, c: torch.Tensor | None, noise: Sequence[torch.Tensor] | None
    ) -> Callable | None:
        G = self.module

        def fwd(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if space == "w":
                return G.synthesis.forward_jvp(x, t)
            return G.forward_jvp(x, t, c=c)

        return fwd


def _stylegan_adapter(G: Any, source: str = "tangentlens") -> StyleGANAdapter:
    cls = StyleGAN3Adapter if isinstance(G, StyleGAN3Generator) else StyleGANAdapter
    return cls(G, source=source)


@contextlib.contextmanager
def _nvidia_reference_ops(G: Any, notes: list[str]) -> Iterator[None]:
    with nvidia_reference_ops(G) as switched:
        for s in switched or []:
            note = f"JVP: NVIDIA custom op switched to its reference path: {s}"
            if note not in notes:
                notes.append(note)
        yield


class CallableAdapter(GeneratorAdapter):
    """``fn(z)`` / ``fn(z, c)`` -> images; also VAE decoders (``decode``), torchmetrics-style and
    torch-fidelity generators (``forward(z[, labels])``)."""

    def __init__(
        self,
        module: Any,
        fn: Callable,
        *,
        z_dim: int,
        kind: str,
        output_range: OutputRange,
        label_kind: Literal["none", "onehot", "index"] = "none",
        num_classes: int = 0,
        z_type: Literal["normal", "unit", "uniform_0_1"] = "normal",
    ) -> None:
        super().__init__(module)
        self.call, self.z_dim, self.kind, self.output_range = fn, z_dim, kind, output_range
        self.label_kind, self.num_classes, self.z_type = label_kind, num_classes, z_type
        self.c_dim = num_classes if label_kind == "onehot" else 0

    def _fn(self, space: str, c: torch.Tensor | None, noise: Sequence[torch.Tensor] | None) -> Callable:
        if space == "w":
            raise ValueError(f"space='w': the generator ({self.kind}) has no mapping network; use space='z'")
        call = self.call
        return (lambda z: call(z)) if c is None else (lambda z: call(z, c))


def _check_z_dim(z_dim: object, what: str) -> int:
    if z_dim is None:
        raise ValueError(
            f"z_dim: {what} does not say its latent size; pass z_dim=N (as_generator, ppl, ppl_distances, "
            "spectrum, scan and geodesic take it; the CLI --z-dim)"
        )
    return check_int(z_dim, "z_dim", 1)


def as_generator(
    generator: object,
    *,
    z_dim: int | None = None,
    output_range: OutputRange | None = None,
    convert_nvidia: bool = True,
    dtype: torch.dtype | None = None,
) -> GeneratorAdapter:
    """The adapter for ``generator`` (module docstring). ``z_dim`` / ``output_range`` override what is
    inferred (plain callables need ``z_dim``; their default range is [-1, 1]); ``dtype`` is the latents'
    dtype (default: the module's parameters', else float32)."""
    if isinstance(generator, GeneratorAdapter):
        if z_dim is not None and z_dim != generator.z_dim:
            raise ValueError(f"z_dim: the adapter says z_dim={generator.z_dim}, got z_dim={z_dim}")
        if output_range is not None and output_range != generator.output_range:
            check_choice(output_range, "output_range", _RANGES)
            raise ValueError(
                f"output_range: the adapter declares {generator.output_range!r}, got {output_range!r}; "
                "pass output_range to as_generator when building the adapter"
            )
        return generator
    ad = _as_generator(generator, z_dim, output_range, convert_nvidia)
    ad.dtype_override = dtype
    return ad


def adapt(
    generator: object,
    *,
    z_dim: int | None = None,
    output_range: OutputRange | None = None,
    z_dim_hint: int | None = None,
) -> GeneratorAdapter:
    """:func:`as_generator` with the user's ``z_dim`` / ``output_range``; a plain callable given no z_dim
    takes ``z_dim_hint`` (the width of explicit latents or points) instead of failing."""
    try:
        return as_generator(generator, z_dim=z_dim, output_range=output_range)
    except ValueError as exc:
        if z_dim is not None or z_dim_hint is None or not str(exc).startswith("z_dim:"):
            raise
        return as_generator(generator, z_dim=z_dim_hint, output_range=output_range)


def _as_generator(
    generator: object, z_dim: int | None, output_range: OutputRange | None, convert_nvidia: bool
) -> GeneratorAdapter:
    if output_range is not None:
        check_choice(output_range, "output_range", _RANGES)
    G: Any = generator
    if hasattr(G, "mapping") and hasattr(G, "synthesis") and hasattr(G, "z_dim") and hasattr(G, "num_ws"):
        if isinstance(G, StyleGAN2Generator | StyleGAN3Generator) or not convert_nvidia:
            ad = _stylegan_adapter(G)
        else:
            try:
                ad = _stylegan_adapter(convert_nvidia_generator(G), source="converted from an NVIDIA object")
            except (NotImplementedError, ValueError, KeyError, RuntimeError) as exc:
                ad = StyleGANAdapter(G)
                ad.notes.append(f"not converted to tangentlens' StyleGAN2Generator: {exc}")
        if output_range is not None:
            ad.output_range = output_range
        return ad
    if hasattr(G, "z_size") and hasattr(G, "z_type") and callable(G):  # torch-fidelity GenerativeModelBase
        n = int(getattr(G, "num_classes", 0) or 0)
        if G.z_type not in ("normal", "unit", "uniform_0_1"):
            raise ValueError(
                f"generator.z_type: expected 'normal', 'unit' or 'uniform_0_1', got {G.z_type!r}"
            )
        return CallableAdapter(
            G,
            G,
            z_dim=_check_z_dim(int(G.z_size), "the torch-fidelity generator (z_size)"),
            kind="torch-fidelity GenerativeModelBase",
            output_range=output_range or "0_255",
            label_kind="index" if n > 0 else "none",
            num_classes=n,
            z_type=G.z_type,
        )
    if hasattr(G, "sample") and callable(G.sample) and callable(G) and not hasattr(G, "decode"):
        # torchmetrics' protocol: sample(n) -> latents, forward(z[, labels]) -> images in [0, 255]
        if z_dim is None:
            with torch.no_grad():
                probe = G.sample(1)
            if not isinstance(probe, torch.Tensor) or probe.ndim != 2:
                raise ValueError(
                    f"generator.sample(1): expected latents [1, z_dim], got {getattr(probe, 'shape', probe)}"
                )
            z_dim = int(probe.shape[1])
        n = int(getattr(G, "num_classes", 0) or 0)
        return CallableAdapter(
            G,
            G,
            z_dim=_check_z_dim(z_dim, "the torchmetrics-style generator"),
            kind="torchmetrics-style (sample + forward)",
            output_range=output_range or "0_255",
            label_kind="index" if n > 0 else "none",
            num_classes=n,
        )
    if hasattr(G, "decode") and callable(G.decode):
        zd = z_dim if z_dim is not None else getattr(G, "z_dim", getattr(G, "latent_dim", None))
        return CallableAdapter(
            G,
            G.decode,
            z_dim=_check_z_dim(zd, "the VAE decoder (no z_dim or latent_dim attribute)"),
            kind="VAE decoder (decode)",
            output_range=output_range or "-1_1",
        )
    if callable(G):
        zd = z_dim if z_dim is not None else getattr(G, "z_dim", None)
        return CallableAdapter(
            G,
            G,
            z_dim=_check_z_dim(zd, "a plain callable"),
            kind="callable",
            output_range=output_range or "-1_1",
        )
    raise TypeError(
        "generator: expected a StyleGAN-style object (mapping/synthesis), a torch-fidelity or torchmetrics "
        f"generator, a VAE with decode(), or a callable z -> image; got {type(G).__name__}"
    )
