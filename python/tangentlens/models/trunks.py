"""Feature trunks of the LPIPS networks, written here so that torchvision is not needed.

Each trunk holds its layers in ``self.features`` with the module indices of torchvision's
``features`` Sequential, so torchvision's state-dict files (keys ``features.N.weight`` /
``features.N.bias``) load as they are. ``forward`` returns the LPIPS taps (SPEC 3): the activations at
the end of each slice of ``features``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tangentlens.ops import _is_channels_last


class Trunk(nn.Module):
    """``features`` plus the slice boundaries whose outputs are tapped."""

    #: torchvision's file name of the ImageNet weights (in the torch hub checkpoint cache).
    weights_file: str = ""
    #: channels of the taps
    channels: tuple[int, ...] = ()
    #: end index (exclusive) of each tapped slice of ``features``
    tap_ends: tuple[int, ...] = ()
    #: the smallest image side the taps exist for (the pooling layers shrink smaller images to nothing)
    min_size: int = 1

    features: nn.Sequential

    def __init__(self) -> None:
        super().__init__()
        # copies of the conv weights in the layout and dtype of a pass: channels_last for passes in that
        # format (oneDNN's NHWC convolution otherwise converts every weight on every call; VGG16: 59 MB,
        # more time than the convolutions themselves below ~8 images at 32²) and bf16/fp16 under autocast
        # (autocast casts a weight that requires no grad on every call). Keyed by (layer, dtype, layout).
        # Not state: never saved; see clear_weight_cache.
        self._weight_copies: dict[tuple[int, torch.dtype, bool], tuple[tuple, object, torch.Tensor]] = {}

    def __getstate__(self) -> dict:
        # copies (deepcopy, pickle) start with an empty cache: it is keyed by this trunk's layers
        state = self.__dict__.copy()
        state["_weight_copies"] = {}
        return state

    def clear_weight_cache(self) -> None:
        """Drop the cached copies of the conv weights. They are refreshed by themselves when a
        weight is replaced or changed in place by a tracked op (``load_state_dict``, ``nn.init``, in-place
        ops under ``no_grad``, ``.to()``); writes through ``weight.data`` bypass torch's version counter,
        so call this after them."""
        self._weight_copies.clear()

    def _conv(self, layer: nn.Conv2d, x: torch.Tensor, channels_last: bool, bias: bool) -> torch.Tensor:
        """``layer(x)`` (with or without its bias), with a cached copy of the weight in the pass's layout
        (channels_last) and autocast dtype (bf16/fp16) when the pass needs one and no gradient of the
        weight is wanted."""
        w = layer.weight
        dtype = _autocast_dtype(x.device.type) if w.dtype == torch.float32 else None
        dtype = dtype or w.dtype
        if (channels_last or dtype != w.dtype) and not (torch.is_grad_enabled() and w.requires_grad):
            key = (w.data_ptr(), w._version, w.dtype, w.device, w.shape, w.stride())
            slot = (id(layer), dtype, channels_last)
            hit = self._weight_copies.get(slot)
            if hit is None or hit[0] != key:
                fmt = torch.channels_last if channels_last else torch.contiguous_format
                # the entry holds the weight's storage: its address cannot be reused while the key has it
                hit = (key, w.untyped_storage(), w.detach().to(dtype).contiguous(memory_format=fmt))
                self._weight_copies[slot] = hit
            w = hit[2]
        b = layer.bias if bias else None
        return F.conv2d(x, w, b, layer.stride, layer.padding, layer.dilation, layer.groups)

    def forward_stacked(self, X: torch.Tensor, *, channels_last: bool = False) -> list[torch.Tensor]:
        """The taps of primal and tangents stacked ``[N, 1 + k, 3, H, W]`` (inputs already scaled), each
        ``[N, 1 + k, C, h, w]``: one pass per layer for all of them (conv, ReLU, max-pool trunks; others
        raise NotImplementedError). Run it without autograd. ``channels_last``: run the layers in that
        memory format (the taps come out in it)."""
        n = X.shape[0]
        x = X.reshape(-1, *X.shape[2:])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        taps: list[torch.Tensor] = []
        ends = iter(self.tap_ends)
        end = next(ends)
        for i, layer in enumerate(self.features):
            x = self._stacked_layer(layer, x, n, channels_last)
            if i + 1 == end:
                taps.append(x.view(n, -1, *x.shape[1:]))
                end = next(ends, -1)
                if end < 0:
                    break
        return taps

    def _stacked_layer(self, layer: nn.Module, X: torch.Tensor, n: int, channels_last: bool) -> torch.Tensor:
        """One trunk layer on primal and tangents stacked as ``[n * (1 + k), ...]`` (primal rows first in
        each group of 1 + k): the forward rules of conv, ReLU and max-pool. Other layers raise
        NotImplementedError."""
        k1 = X.shape[0] // n
        if isinstance(layer, nn.Conv2d) and layer.padding_mode == "zeros":
            Y = self._conv(layer, X, channels_last, bias=False)
            if layer.bias is not None:  # the bias is constant: primal rows only
                Y.view(n, k1, *Y.shape[1:])[:, 0] += layer.bias[:, None, None]
            return Y
        if isinstance(layer, nn.ReLU):  # d relu = 1[x > 0], torch's convention at 0
            G = X.view(n, k1, *X.shape[1:])
            return (G * (G[:, :1] > 0)).view_as(X)
        if isinstance(layer, nn.MaxPool2d):  # the tangent is taken where the primal's maximum is
            G = X.view(n, k1, *X.shape[1:])
            y, idx = F.max_pool2d(
                G[:, 0], layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode, True
            )
            c, h, w = y.shape[1:]
            if _is_channels_last(X):
                # gather along the pixels of [n, 1+k, H*W, C] views: no copy out of channels_last and back
                flat = G.permute(0, 1, 3, 4, 2).reshape(n, k1, -1, G.shape[2])
                where = idx.permute(0, 2, 3, 1).reshape(n, 1, h * w, c).expand(-1, k1, -1, -1)
                return flat.gather(2, where).view(n * k1, h, w, c).permute(0, 3, 1, 2)
            flat = G.flatten(3)  # [n, 1+k, C, H*W]
            out = flat.gather(3, idx.flatten(2)[:, None].expand(-1, k1, -1, -1))
            return out.view(n * k1, c, h, w)
        raise NotImplementedError(f"no stacked forward rule for {type(layer).__name__}")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The taps of images x [N, 3, H, W] (normalised), in x's memory format."""
        taps: list[torch.Tensor] = []
        ends = iter(self.tap_ends)
        end = next(ends)
        channels_last = x.dim() == 4 and _is_channels_last(x)
        cached = channels_last or _autocast_dtype(x.device.type) is not None
        for i, layer in enumerate(self.features):
            if cached and isinstance(layer, nn.Conv2d) and layer.padding_mode == "zeros":
                x = self._conv(layer, x, channels_last, bias=True)
            else:
                x = layer(x)
            if i + 1 == end:
                taps.append(x)
                end = next(ends, -1)
                if end < 0:
                    break
        return taps


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The low dtype autocast casts convolutions to on this device type, None when it is off."""
    if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def _relu() -> nn.ReLU:
    return nn.ReLU(inplace=False)


class VGG16Features(Trunk):
    """VGG16 ``features`` [0:30]; taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""

    weights_file = "vgg16-397923af.pth"
    channels = (64, 128, 256, 512, 512)
    tap_ends = (4, 9, 16, 23, 30)
    min_size = 16  # four 2x2 max-pools before relu5_3

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for block, (c_out, convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]):
            if block > 0:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            for _ in range(convs):
                layers += [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), _relu()]
                c_in = c_out
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))  # index 30, never reached by the taps
        self.features = nn.Sequential(*layers)


class AlexNetFeatures(Trunk):
    """AlexNet ``features`` (torchvision's one-weird-trick variant); taps after relu1..relu5."""

    weights_file = "alexnet-owt-7be5be79.pth"
    channels = (64, 192, 384, 256, 256)
    tap_ends = (2, 5, 8, 10, 12)
    min_size = 31  # the stride-4 11x11 convolution and two 3x3 stride-2 max-pools

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            _relu(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            _relu(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            _relu(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            _relu(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            _relu(),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )


class Fire(nn.Module):
    """SqueezeNet fire module: squeeze 1x1, then concatenated 1x1 and 3x3 expansions."""

    def __init__(self, c_in: int, squeeze: int, expand1x1: int, expand3x3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(c_in, squeeze, kernel_size=1)
        self.squeeze_activation = _relu()
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, kernel_size=1)
        self.expand1x1_activation = _relu()
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, kernel_size=3, padding=1)
        self.expand3x3_activation = _relu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1
        )


class SqueezeNet11Features(Trunk):
    """SqueezeNet 1.1 ``features``; seven taps (after relu1, fire3, fire5, fire6, fire7, fire8, fire9)."""

    weights_file = "squeezenet1_1-b8a52dc0.pth"
    channels = (64, 128, 256, 384, 384, 512, 512)
    tap_ends = (2, 5, 8, 10, 11, 12, 13)
    min_size = 17  # the stride-2 3x3 convolution and three 3x3 stride-2 max-pools

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=3, stride=2),
            _relu(),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(64, 16, 64, 64),
            Fire(128, 16, 64, 64),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(128, 32, 128, 128),
            Fire(256, 32, 128, 128),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(256, 48, 192, 192),
            Fire(384, 48, 192, 192),
            Fire(384, 64, 256, 256),
            Fire(512, 64, 256, 256),
        )


TRUNKS: dict[str, type[Trunk]] = {
    "vgg16": VGG16Features,
    "alex": AlexNetFeatures,
    "squeeze": SqueezeNet11Features,
}
