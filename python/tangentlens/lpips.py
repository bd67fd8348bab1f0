"""LPIPS (v0.1) without torchvision: the module, its weight loaders and NVIDIA's TorchScript form (SPEC 3).

``LPIPS(x0, x1) = sum_l mean_hw sum_c w_lc (f_hat0 - f_hat1)^2`` with ``f_hat`` the channel-normalised
activations of the trunk, which is ``|e(x0) - e(x1)|^2`` for the embedding
``e(x)_l = sqrt(w_l / (H_l W_l)) f_hat_l``.

Weights (never unpickled: ``torch.load(..., weights_only=True)``):

- trunk: torchvision's ImageNet state dicts as they are (``features.N.weight`` keys):
  ``vgg16-397923af.pth``, ``alexnet-owt-7be5be79.pth``, ``squeezenet1_1-b8a52dc0.pth``;
- linear layers: the lpips package's ``weights/v0.1/{vgg,alex,squeeze}.pth`` (``linL.model.1.weight``).

An explicit path wins; otherwise :mod:`tangentlens.weights` finds the file (``$TANGENTLENS_WEIGHTS``,
torch.hub's cache, the installed lpips package, torchmetrics' bundled copies) or downloads it,
digest-checked, into torch.hub's cache (not with ``download=False`` or ``$TANGENTLENS_OFFLINE=1``).
See docs/lpips.md.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import os
import pickle
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from tangentlens import ops, weights
from tangentlens._extension import Impl
from tangentlens.models.trunks import TRUNKS, Trunk
from tangentlens.reference.lpips import normalize_channels
from tangentlens.weights import WeightsNotFoundError

__all__ = [
    "LPIPS",
    "WEIGHTS_ENV",
    "NvidiaTorchScriptLPIPS",
    "WeightsNotFoundError",
    "as_rgb",
    "find_weights",
    "load_linear_weights",
    "load_trunk_weights",
    "unchecked_range",
]

WEIGHTS_ENV = weights.ENV_WEIGHTS
NET_ALIASES = {"vgg16": "vgg16", "vgg": "vgg16", "alex": "alex", "alexnet": "alex", "squeeze": "squeeze"}
LINEAR_FILES = {"vgg16": "vgg.pth", "alex": "alex.pth", "squeeze": "squeeze.pth"}
# The scaling layer: (x - shift) / scale on images in [-1, 1] (ImageNet mean / std of (x + 1) / 2).
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# below this many pixels (images x H x W) a CPU trunk pass stays NCHW: oneDNN's NHWC path has no gain
# there (one-off timings, VGG16 on 2 cores: 0.8-1.1x at 512-4096 pixels, 1.1-1.65x from 8192)
CPU_CHANNELS_LAST_MIN_PIXELS = 4096
# eps conventions: the lpips package (eps outside the sqrt) and torchmetrics (inside).
EPS_PRESETS: dict[str, tuple[ops.EpsMode, float]] = {
    "lpips": ("outside", 1e-10),
    "torchmetrics": ("inside", 1e-8),
}

PathLike = str | os.PathLike
InputRange = Literal["-1_1", "0_255"]


def find_weights(filename: str, kind: Literal["trunk", "linear"] = "trunk", version: str = "0.1") -> Path:
    """The first existing ``filename`` (a registered LPIPS file) along the search order, verified as on
    load; nothing is downloaded. WeightsNotFoundError otherwise (naming the places and how to get it)."""
    key = weights.key_for_filename(filename)
    if key is None or version != "0.1":
        raise WeightsNotFoundError(f"{filename!r} (v{version}) is not a registered LPIPS weights file")
    explicit = "trunk_weights=..." if kind == "trunk" else "linear_weights=..."
    return weights.fetch(key, download=False, explicit=explicit).path


def _load_state(source: PathLike | Mapping[str, torch.Tensor], what: str) -> Mapping[str, torch.Tensor]:
    if isinstance(source, Mapping):
        return source
    path = Path(source)
    if not path.is_file():
        raise WeightsNotFoundError(f"{what}: no such file {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise  # a file that needs code to load: the caller's message (never unpickled by default)
    except Exception as exc:  # noqa: BLE001 - a truncated or damaged file
        raise ValueError(
            f"{what}: {str(path)!r} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
            "the file is damaged or not a torch.save state dict: download it again"
        ) from exc
    if not isinstance(state, Mapping):
        raise ValueError(f"{what}: expected a state dict in {str(path)!r}, got {type(state).__name__}")
    return state


def load_trunk_weights(trunk: Trunk, source: PathLike | Mapping[str, torch.Tensor]) -> None:
    """Load torchvision's state dict (``features.N.*`` keys; ``classifier.*`` keys are ignored)."""
    state = _load_state(source, "trunk_weights")
    feats = {k: v for k, v in state.items() if k.startswith("features.")}
    expected = trunk.state_dict().keys()
    missing = sorted(set(expected) - set(feats))
    unexpected = sorted(set(feats) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"trunk_weights: not a torchvision {type(trunk).__name__} state dict: missing keys {missing[:4]}"
            f"{'...' if len(missing) > 4 else ''}, unexpected keys {unexpected[:4]}"
            f"{'...' if len(unexpected) > 4 else ''}"
        )
    for k, v in feats.items():
        want = trunk.state_dict()[k].shape
        if v.shape != want:
            raise ValueError(f"trunk_weights: {k}: expected shape {tuple(want)}, got {tuple(v.shape)}")
    trunk.load_state_dict(feats)


def load_linear_weights(
    source: PathLike | Mapping[str, torch.Tensor], channels: tuple[int, ...]
) -> list[torch.Tensor]:
    """The lpips v0.1 linear layers: ``lin{l}.model.1.weight`` [1, C_l, 1, 1] -> [C_l] each, checked >= 0."""
    state = _load_state(source, "linear_weights")
    out = []
    for layer, c in enumerate(channels):
        key = f"lin{layer}.model.1.weight"
        if key not in state:
            raise ValueError(f"linear_weights: missing key {key!r} (found {sorted(state)[:8]})")
        w = state[key]
        if tuple(w.shape) != (1, c, 1, 1):
            raise ValueError(f"linear_weights: {key}: expected shape (1, {c}, 1, 1), got {tuple(w.shape)}")
        if not torch.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"linear_weights: {key}: expected finite non-negative weights")
        out.append(w.reshape(c).to(torch.float32))
    extra = sorted(k for k in state if k.startswith("lin") and int(k[3:].split(".")[0]) >= len(channels))
    if extra:
        raise ValueError(f"linear_weights: unexpected keys {extra} for a {len(channels)}-layer network")
    return out


def _explicit_info(given: object) -> dict[str, object]:
    if isinstance(given, Mapping):
        return {"file": "a state dict passed in", "source": "explicit"}
    path = Path(given)  # type: ignore[arg-type]
    return {"file": path.name, "path": str(path), "source": "explicit"}


# Off inside unchecked_range(): callers that check their images' range themselves (the PPL and spectra
# engines, which know the generator's declared range and warn once per run).
_RANGE_CHECK: contextvars.ContextVar[bool] = contextvars.ContextVar("tangentlens_lpips_range", default=True)


@contextlib.contextmanager
def unchecked_range() -> Iterator[None]:
    """Within the block, LPIPS modules skip their input-range check."""
    token = _RANGE_CHECK.set(False)
    try:
        yield
    finally:
        _RANGE_CHECK.reset(token)


def as_rgb(x: torch.Tensor) -> torch.Tensor:
    """Images ``[..., 1 or 3, H, W]`` with 3 channels: a grey image is its channel repeated, the one rule
    for 1-channel images everywhere (NVIDIA's PPL repeats them; the lpips package's scaling layer
    broadcasts them to the same numbers)."""
    return x if x.shape[-3] == 3 else x.expand(*x.shape[:-3], 3, *x.shape[-2:])


def _check_image(x: object, name: str, min_size: int = 1) -> torch.Tensor:
    """Images [N, 1 or 3, H, W] of a floating dtype, at least ``min_size`` pixels on each side, as RGB."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(
            f"{name}: expected images [N, 3, H, W] (or [N, 1, H, W]), got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{name}: expected a floating-point tensor, got {x.dtype} (convert uint8 images with "
            "x.float() and construct LPIPS with input_range='0_255')"
        )
    if min(x.shape[2], x.shape[3]) < min_size:
        raise ValueError(
            f"{name}: expected images of at least {min_size}x{min_size} pixels (smaller ones vanish in the "
            f"trunk's pooling layers), got {x.shape[2]}x{x.shape[3]}; upsample them first, e.g. "
            f"torch.nn.functional.interpolate(x, size=(64, 64), mode='bilinear')"
        )
    return as_rgb(x)


def _check_values(x: torch.Tensor, name: str, input_range: str) -> None:
    """Refuse images whose values contradict ``input_range`` ([0, 255] images read as [-1, 1] give a number
    several times off): never negative but above 2 in ``"-1_1"``, or clearly negative in ``"0_255"``."""
    if (
        not _RANGE_CHECK.get()
        or x.numel() == 0
        or torch._C._functorch.is_functorch_wrapped_tensor(x)
        or torch.compiler.is_compiling()
    ):
        return
    lo, hi = float(x.detach().min()), float(x.detach().max())
    fix = "pass check_range=False to LPIPS(...) if these values are really meant"
    if input_range == "-1_1" and lo >= 0 and hi > 2:
        raise ValueError(
            f"{name}: values in [{lo:.4g}, {hi:.4g}], never negative, for input_range='-1_1': these look "
            "like images in [0, 255]; construct LPIPS(..., input_range='0_255') or give x / 127.5 - 1 "
            f"({fix})"
        )
    if input_range == "0_255" and lo < -0.5:
        raise ValueError(
            f"{name}: negative values (down to {lo:.4g}) for input_range='0_255': these look like images in "
            f"[-1, 1]; construct LPIPS(..., input_range='-1_1') ({fix})"
        )


def _check_input_range(input_range: object) -> InputRange:
    if input_range not in ("-1_1", "0_255"):
        raise ValueError(f"input_range: expected '-1_1' or '0_255', got {input_range!r}")
    return input_range  # type: ignore[return-value]


class LPIPS(nn.Module):
    """LPIPS v0.1 with our own trunks and the fused layer head.

    Args:
        net: ``"vgg16"`` (alias ``"vgg"``), ``"alex"`` or ``"squeeze"``.
        version: the linear-layer version; only ``"0.1"`` exists.
        trunk_weights: a torchvision state-dict file or dict; None finds or downloads torchvision's file
            (:mod:`tangentlens.weights`).
        linear_weights: lpips' linear-layer file or dict; None finds or downloads lpips' v0.1 file.
        download: None downloads missing weight files unless ``$TANGENTLENS_OFFLINE`` is set; False never
            touches the network (a missing file is an error naming it and where to put it).
        progress: a progress bar on stderr while downloading.
        eps_mode: ``"lpips"`` (``f / (|f| + 1e-10)``, the lpips package) or ``"torchmetrics"``
            (``f / sqrt(|f|^2 + 1e-8)``); ``eps`` overrides the constant.
        input_range: ``"-1_1"`` (default) or ``"0_255"`` (StyleGAN's convention, mapped by x / 127.5 - 1).
        check_range: refuse images whose values contradict ``input_range`` (never negative and above 2 for
            ``"-1_1"``: [0, 255] images; clearly negative for ``"0_255"``). Images outside [-1, 1] by a
            little (generators overshoot) always pass.
        pretrained: False builds randomly initialised weights (seeded; for tests and timing only, not a
            perceptual metric).
        impl: the fused head's implementation (see :func:`tangentlens._extension.resolve_impl`).

    ``lp(x0, x1) -> [N]``, ``lp.embed(x) -> [N, F]`` with ``lp(x0, x1) == |embed(x0) - embed(x1)|^2``.
    Images are ``[N, 3, H, W]`` (``[N, 1, H, W]`` is taken as grey: the channel repeated), at least
    ``trunk.min_size`` pixels on a side (16 for VGG16, 31 for AlexNet, 17 for SqueezeNet). The computation
    follows the images' dtype: float64 images run the trunk in float64 (a cast copy of its weights, kept
    until the weights change), whatever dtype the module's parameters have.
    Parameters are frozen (``requires_grad=False``); gradients with respect to the images flow.
    """

    def __init__(
        self,
        net: str = "vgg16",
        version: str = "0.1",
        *,
        trunk_weights: PathLike | Mapping[str, torch.Tensor] | None = None,
        linear_weights: PathLike | Mapping[str, torch.Tensor] | None = None,
        eps_mode: Literal["lpips", "torchmetrics"] = "lpips",
        eps: float | None = None,
        input_range: InputRange = "-1_1",
        check_range: bool = True,
        pretrained: bool = True,
        impl: Impl = "auto",
        download: bool | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(check_range, bool):
            raise TypeError(f"check_range: expected True or False, got {check_range!r}")
        self.check_range = check_range
        if net not in NET_ALIASES:
            raise ValueError(f"net: expected one of {sorted(NET_ALIASES)}, got {net!r}")
        if version != "0.1":
            raise ValueError(f"version: only '0.1' linear layers exist, got {version!r}")
        if eps_mode not in EPS_PRESETS:
            raise ValueError(f"eps_mode: expected 'lpips' or 'torchmetrics', got {eps_mode!r}")
        self.net = NET_ALIASES[net]
        self.input_range = _check_input_range(input_range)
        self.eps_mode: ops.EpsMode = EPS_PRESETS[eps_mode][0]
        self.eps = float(EPS_PRESETS[eps_mode][1] if eps is None else eps)
        self.impl: Impl = impl
        self.trunk: Trunk = TRUNKS[self.net]()
        # trunk copies in the images' dtype when it differs from the parameters' (not state: never saved)
        self._cast_trunks: dict[torch.dtype, tuple[tuple, list, Trunk]] = {}
        channels = self.trunk.channels
        #: where the weights came from (named in results: the distance says which weights it used)
        self.weights_info: dict[str, object] = {}
        if pretrained:
            parts = {"trunk": trunk_weights, "linear": linear_weights}
            wanted = [part for part, given in parts.items() if given is None]
            found = weights.fetch_all(
                [f"{self.net}-{part}" for part in wanted],
                download=download,
                progress=progress,
                explicit=", ".join(f"{part}_weights=..." for part in wanted),
            )
            for part, f in zip(wanted, found, strict=True):
                parts[part] = f.path
                self.weights_info[part] = f.describe()
            for part, given in (("trunk", trunk_weights), ("linear", linear_weights)):
                if given is not None:
                    self.weights_info[part] = _explicit_info(given)
            trunk_weights, linear_weights = parts["trunk"], parts["linear"]
            assert trunk_weights is not None and linear_weights is not None
            load_trunk_weights(self.trunk, trunk_weights)
            lins = load_linear_weights(linear_weights, channels)
        else:
            self.weights_info = {
                "random": "seeded random weights (pretrained=False): not a perceptual metric"
            }
            if trunk_weights is not None or linear_weights is not None:
                raise ValueError("pretrained=False builds random weights; do not pass weight files with it")
            g = torch.Generator().manual_seed(0)
            for m in self.trunk.modules():
                if isinstance(m, nn.Conv2d):
                    fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                    m.weight.data = torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5
                    assert m.bias is not None
                    m.bias.data = 0.01 * torch.randn(m.bias.shape, generator=g)
            lins = [torch.rand(c, generator=g) / c for c in channels]
        for layer, w in enumerate(lins):
            self.register_buffer(f"lin{layer}", w)
        # float64 constants, cast to the images' dtype when used
        self.register_buffer("shift", torch.tensor(SHIFT, dtype=torch.float64).reshape(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE, dtype=torch.float64).reshape(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def weights_label(self) -> str:
        """Which weights, in a few words: ``"torchvision vgg16-397923af.pth + lpips v0.1 vgg.pth"``."""
        if "random" in self.weights_info:
            return "random weights (pretrained=False)"
        parts = []
        for part, owner in (("trunk", "torchvision"), ("linear", "lpips v0.1")):
            info = self.weights_info[part]
            assert isinstance(info, dict)
            parts.append(
                f"{owner} {info['file']}" if info["source"] != "explicit" else f"{part} {info['file']}"
            )
        return " + ".join(parts)

    @property
    def linear_weights(self) -> list[torch.Tensor]:
        return [getattr(self, f"lin{i}") for i in range(len(self.trunk.channels))]

    def _channels_last(self, x: torch.Tensor) -> bool:
        """Whether the trunk runs in channels_last: forward passes on a CPU in float32 with the native
        implementation over at least ``CPU_CHANNELS_LAST_MIN_PIXELS`` pixels (images x height x width of
        x [..., 3, H, W]), where oneDNN's NHWC convolutions (with the trunk's cached channels_last weights)
        ran 1.1-1.6x faster and never slower by more than the noise below. Not when a reverse pass will
        follow, through x or trainable trunk weights (the NHWC backward measured no faster, at 16² up to
        15 % slower), not inside torch.func transforms (vmap cannot change a tensor's memory format), and
        not for the reference implementation, which keeps torch's default NCHW as the peers run it."""
        return (
            self.impl != "reference"
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.numel() // x.shape[-3] >= CPU_CHANNELS_LAST_MIN_PIXELS
            and not (torch.is_grad_enabled() and (x.requires_grad or self._trainable_trunk()))
            and not torch._C._functorch.is_functorch_wrapped_tensor(x)
        )

    def _trainable_trunk(self) -> bool:
        return any(p.requires_grad for p in self.trunk.parameters())

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cast_trunks"] = {}
        return state

    def _trunk_for(self, dtype: torch.dtype) -> Trunk:
        """The trunk in ``dtype``: itself, or a cast copy refreshed when a weight is replaced or changed in
        place by a tracked op (like the channels_last weight cache)."""
        params = list(self.trunk.parameters())
        if not params or params[0].dtype == dtype or dtype not in ops.FLOAT_DTYPES:
            return self.trunk
        key = tuple((p.data_ptr(), p._version, p.device) for p in params)
        hit = self._cast_trunks.get(dtype)
        if hit is None or hit[0] != key:
            # the entry holds the weights' storages: their addresses cannot be reused while the key has them
            cast = copy.deepcopy(self.trunk).to(dtype)
            hit = (key, [p.untyped_storage() for p in params], cast)
            self._cast_trunks[dtype] = hit
        return hit[2]

    def _images(self, x: object, name: str) -> torch.Tensor:
        x = _check_image(x, name, self.trunk.min_size)
        if self.check_range:
            _check_values(x, name, self.input_range)
        return x

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_range == "0_255":
            x = x / 127.5 - 1.0
        return (x - self.shift.to(x.dtype)) / self.scale.to(x.dtype)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = self._normalise(x)
        if x.dim() == 4 and self._channels_last(x):
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The trunk's taps for images ``x`` (in ``input_range``), NCHW-contiguous whatever layout the trunk
        ran in (so ``.view`` works on them)."""
        x = self._images(x, "x")
        return [f.contiguous() for f in self._trunk_for(x.dtype)(self._prepare(x))]

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        x0, x1 = self._images(x0, "x0"), self._images(x1, "x1")
        if x0.shape != x1.shape:
            raise ValueError(f"x1: expected the shape of x0 {tuple(x0.shape)}, got {tuple(x1.shape)}")
        if x0.dtype != x1.dtype:
            raise TypeError(f"x1: expected the dtype of x0 ({x0.dtype}), got {x1.dtype}")
        n = x0.shape[0]
        feats = self._trunk_for(x0.dtype)(self._prepare(torch.cat([x0, x1])))  # one pass for both images
        total = None
        for f, w in zip(feats, self.linear_weights, strict=True):
            d = ops.lpips_layer_distance(
                f[:n], f[n:], w, eps=self.eps, eps_mode=self.eps_mode, impl=self.impl
            )
            total = d if total is None else total + d
        assert total is not None
        return total

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding [N, F] (layers concatenated, each flattened in C, H, W order)."""
        mode = ops._eps_mode(self.eps_mode)
        parts = []
        for f, w in zip(self.features(x), self.linear_weights, strict=True):
            hw = f.shape[2] * f.shape[3]
            scale = torch.sqrt(w.to(f.dtype) / hw).reshape(1, -1, 1, 1)
            parts.append((scale * normalize_channels(f, self.eps, mode)).flatten(1))
        return torch.cat(parts, dim=1)

    def _stacked_taps(self, x: torch.Tensor, v: torch.Tensor) -> list[torch.Tensor]:
        """The taps of images x [N, 3, H, W] and of their tangents v [N, K, 3, H, W] in one stacked pass
        without autograd, each ``[N, 1 + K, C, h, w]`` (primal first; the scaling layer is affine, so its
        tangent is v / scale). NotImplementedError for trunks without stacked rules."""
        x, v = as_rgb(x), as_rgb(v)
        tscale = self.scale.to(v.dtype).unsqueeze(1) * (127.5 if self.input_range == "0_255" else 1.0)
        X = torch.cat([self._normalise(x).unsqueeze(1), v / tscale], dim=1)
        with torch.no_grad():
            return self._trunk_for(X.dtype).forward_stacked(X, channels_last=self._channels_last(X))

    def tangent_norms(self, x: torch.Tensor, v: torch.Tensor, *, gram: bool = False) -> torch.Tensor:
        """``|J v_k|^2`` [N, K] (or ``<J v_i, J v_j>`` [N, K, K]) of the embedding at images x [N, 3, H, W]
        along image tangents v [N, K, 3, H, W]: the trunk's JVPs (a stacked pass of primal and tangents
        through VGG/AlexNet layers, else torch.func vmapped over K; torch.func also when x or v requires
        grad) and the fused tangent kernel per layer (module's eps convention; finite at f = 0 in both).
        Grey images x [N, 1, H, W] take grey tangents v [N, K, 1, H, W] (both repeated to 3 channels)."""
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"v: expected a tensor, got {type(v).__name__}")
        if isinstance(x, torch.Tensor) and x.dim() == 4 and v.dim() == 5 and v.shape[2] == x.shape[1] == 1:
            v = as_rgb(v)
        x = self._images(x, "x")
        if v.dim() != 5 or v.shape[0] != x.shape[0] or v.shape[2:] != x.shape[1:]:
            raise ValueError(
                f"v: expected shape [{x.shape[0]}, K, {', '.join(map(str, x.shape[1:]))}], "
                f"got {tuple(v.shape)}"
            )

        trunk = self._trunk_for(x.dtype)

        def feats(xx: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(trunk(self._prepare(xx)))

        primal = tans = None
        if not (torch.is_grad_enabled() and (x.requires_grad or v.requires_grad)):
            try:
                taps = self._stacked_taps(x, v)
                primal, tans = [t[:, 0] for t in taps], [t[:, 1:] for t in taps]
            except NotImplementedError:  # e.g. SqueezeNet's Fire modules
                primal = tans = None
        if primal is None:
            # One vmapped forward-mode pass: the taps (computed once) and their K tangents.
            primal, tans = torch.func.vmap(
                lambda t: torch.func.jvp(feats, (x,), (t,)), in_dims=1, out_dims=(None, 1)
            )(v.contiguous())
        total = None
        for f, t, w in zip(primal, tans, self.linear_weights, strict=True):
            r = ops.lpips_tangent_norm(
                f, t, w, eps=self.eps, eps_mode=self.eps_mode, gram=gram, impl=self.impl
            )
            total = r if total is None else total + r
        assert total is not None
        return total

    @staticmethod
    def from_nvidia_torchscript(
        path: PathLike | None = None,
        *,
        input_range: InputRange = "-1_1",
        download: bool | None = None,
        progress: bool = True,
    ) -> NvidiaTorchScriptLPIPS:
        """Load NVIDIA's TorchScript ``vgg16.pt`` (the StyleGAN metrics' LPIPS) behind our interface.

        ``path=None`` finds the file (``$TANGENTLENS_WEIGHTS``, torch.hub's cache, NVIDIA's dnnlib cache) or
        downloads it from NVIDIA's pinned URL (``download``, ``progress``: as :class:`LPIPS`). NVIDIA
        publishes no digest for it: a found or downloaded file must be a TorchScript archive holding at least
        VGG16's parameters (:mod:`tangentlens.weights`); an explicit path is used as given.

        TorchScript is code: ``torch.jit.load`` runs what the file says, so trust the file as you would a
        pickle. This is the only place tangentlens calls ``torch.jit.load``.
        """
        return NvidiaTorchScriptLPIPS(path, input_range=input_range, download=download, progress=progress)


class NvidiaTorchScriptLPIPS(nn.Module):
    """NVIDIA's ``vgg16.pt`` with LPIPS' interface: ``forward(x0, x1) -> [N]``, ``embed(x) -> [N, F]``.

    The TorchScript module is called as ``m(img_0_255, resize_images=False, return_lpips=True)`` and returns
    the flattened embedding; images in [-1, 1] are mapped to [0, 255] first (``input_range="-1_1"``).
    """

    def __init__(
        self,
        path: PathLike | None = None,
        *,
        input_range: InputRange = "-1_1",
        download: bool | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__()
        if path is None:
            found = weights.fetch("nvidia-vgg16", download=download, progress=progress, explicit="path=...")
            path, self.weights_info = found.path, {"module": found.describe()}
        else:
            path = Path(path)
            if not path.is_file():
                raise WeightsNotFoundError(
                    f"from_nvidia_torchscript: no such file {str(path)!r}; NVIDIA's LPIPS module is "
                    f"{weights.NVIDIA_VGG16_URL}"
                )
            self.weights_info = {"module": _explicit_info(path)}
        self.input_range = _check_input_range(input_range)
        self.module = torch.jit.load(str(path), map_location="cpu")
        self.requires_grad_(False)
        self.eval()

    def weights_label(self) -> str:
        info = self.weights_info["module"]
        assert isinstance(info, dict)
        return "NVIDIA vgg16.pt" + ("" if info["source"] != "explicit" else f": {info['path']}")

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_image(x, "x")
        img = (x + 1.0) * 127.5 if self.input_range == "-1_1" else x
        e = self.module(img, resize_images=False, return_lpips=True)
        if not isinstance(e, torch.Tensor) or e.dim() != 2 or e.shape[0] != x.shape[0]:
            raise ValueError(
                f"from_nvidia_torchscript: expected the module to return [N, F], got "
                f"{tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__}"
            )
        return e

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        if x0.shape != x1.shape:
            raise ValueError(f"x1: expected the shape of x0 {tuple(x0.shape)}, got {tuple(x1.shape)}")
        return (self.embed(x0) - self.embed(x1)).square().sum(1)
