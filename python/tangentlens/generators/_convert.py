"""Shared steps of turning NVIDIA networks (recorded from a pickle, or live objects) into tangentlens models:
constructor arguments, strict state-dict loading, the finished model."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tangentlens._extension import Impl
from tangentlens.generators.unpickle import plain

DeviceLike = str | torch.device | None

# NVIDIA's Generator positional arguments, in order (both code bases).
GENERATOR_ARGS = (
    "z_dim",
    "c_dim",
    "w_dim",
    "img_resolution",
    "img_channels",
    "mapping_kwargs",
    "synthesis_kwargs",
)
SIZE_ARGS = GENERATOR_ARGS[:5]


class UnsupportedGeneratorError(NotImplementedError):
    """The network is not one our generators reproduce (other class, architecture or arguments)."""


def as_int(x: Any, what: str) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise UnsupportedGeneratorError(f"{what}: expected an int, got {x!r}")
    return int(x)


def check_impl(impl: object) -> None:
    if impl not in ("auto", "native", "reference"):
        raise ValueError(f"impl: expected 'auto', 'native' or 'reference', got {impl!r}")


def generator_arguments(
    init_args: Any, init_kwargs: Any, attrs: Mapping[str, Any], where: str
) -> tuple[dict[str, int], dict[str, Any], dict[str, Any]]:
    """NVIDIA's ``Generator(*init_args, **init_kwargs)`` split into (sizes, mapping_kwargs, synthesis_kwargs);
    synthesis arguments given flat (stylegan3's ``**synthesis_kwargs``) are merged into the latter."""
    if not isinstance(init_args, tuple | list | type(None)) or not isinstance(init_kwargs, Mapping | None):
        raise UnsupportedGeneratorError(
            f"{where}: expected init args as a tuple and init kwargs as a dict, got "
            f"{type(init_args).__name__} and {type(init_kwargs).__name__}"
        )
    init_args = plain(tuple(init_args or ()))
    init_kwargs = plain(dict(init_kwargs or {}))
    if len(init_args) > len(GENERATOR_ARGS):
        raise UnsupportedGeneratorError(
            f"{where}: expected at most 7 positional init args, got {len(init_args)}"
        )
    kw: dict[str, Any] = dict(zip(GENERATOR_ARGS, init_args, strict=False))
    both = sorted(set(kw) & set(init_kwargs))
    if both:
        raise UnsupportedGeneratorError(f"{where}: init args given both positionally and by name: {both}")
    kw.update(init_kwargs)
    sizes: dict[str, int] = {}
    for name in SIZE_ARGS:  # the persistent object also keeps them as attributes
        value = kw.pop(name, attrs.get(name))
        if value is None:
            raise UnsupportedGeneratorError(f"{where}: the constructor argument {name!r} is missing")
        sizes[name] = as_int(value, f"{where}: {name}")
    mapping = dict(kw.pop("mapping_kwargs", None) or {})
    synthesis = dict(kw.pop("synthesis_kwargs", None) or {})
    clash = sorted(set(kw) & set(synthesis))
    if clash:
        raise UnsupportedGeneratorError(f"{where}: {clash} given both in synthesis_kwargs and directly")
    synthesis.update(kw)
    return sizes, mapping, synthesis


@dataclass(frozen=True)
class ArgumentMap:
    """Where NVIDIA's constructor arguments go in one of our constructors."""

    cls_name: str
    top: tuple[str, ...]  # synthesis arguments our constructor takes directly
    synthesis: tuple[str, ...]  # passed on in synthesis_kwargs
    mapping: tuple[str, ...]  # passed on in mapping_kwargs (num_layers becomes mapping_layers)
    ignored: tuple[str, ...] = ()  # arguments that do not change the function computed


def our_kwargs(
    init_args: Any,
    init_kwargs: Any,
    attrs: Mapping[str, Any],
    where: str,
    amap: ArgumentMap,
    problems: Callable[[dict[str, Any]], list[str]] | None = None,
) -> dict[str, Any]:
    """NVIDIA's constructor arguments as our constructor's (``amap``); unsupported ones, and what
    ``problems(synthesis_kwargs)`` finds, are refused by name."""
    sizes, mapping, synthesis = generator_arguments(init_args, init_kwargs, attrs, where)
    out: dict[str, Any] = dict(sizes)
    syn_kw: dict[str, Any] = {}
    map_kw: dict[str, Any] = {}
    unsupported: list[str] = []
    for k, v in synthesis.items():
        if k in amap.top:
            out[k] = v
        elif k in amap.synthesis:
            syn_kw[k] = v
        elif k not in amap.ignored:
            unsupported.append(f"synthesis_kwargs[{k!r}]={v!r}")
    for k, v in mapping.items():
        if k == "num_layers":
            out["mapping_layers"] = as_int(v, f"{where}: mapping_kwargs['num_layers']")
        elif k in amap.mapping:
            map_kw[k] = v
        else:
            unsupported.append(f"mapping_kwargs[{k!r}]={v!r}")
    unsupported += problems(syn_kw) if problems is not None else []
    if unsupported:
        raise UnsupportedGeneratorError(
            f"{where}: {amap.cls_name} cannot reproduce these NVIDIA constructor arguments: "
            + ", ".join(unsupported)
        )
    out["mapping_kwargs"] = map_kw
    out["synthesis_kwargs"] = syn_kw
    return out


def load_strict(G: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    expected = G.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: expected {tuple(expected[k].shape)}, got {tuple(state[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or shapes:

        def show(xs: list[str]) -> str:
            return f"{xs[:6]}{' ...' if len(xs) > 6 else ''} ({len(xs)})"

        raise UnsupportedGeneratorError(
            f"{where}: the tensors do not match a {type(G).__name__} built from its constructor arguments: "
            f"missing {show(missing)}, unexpected {show(unexpected)}, shape mismatches {show(shapes)}"
        )
    G.load_state_dict(state, strict=True)


def finish(G: nn.Module, device: DeviceLike) -> Any:
    G.eval().requires_grad_(False)
    return G.to(device) if device is not None else G


def build(
    cls: Callable[..., nn.Module],
    kwargs: dict[str, Any],
    state: Mapping[str, torch.Tensor],
    impl: Impl,
    where: str,
) -> Any:
    try:
        G = cls(**kwargs, impl=impl)
    except (TypeError, ValueError) as exc:
        raise UnsupportedGeneratorError(f"{where}: {cls.__name__}({kwargs}) failed: {exc}") from exc
    load_strict(G, state, where)
    return G


def live_children(obj: Any) -> dict[str, tuple[str, Any]]:
    if not isinstance(obj, nn.Module):
        return {}
    # NVIDIA's persistent classes carry the original class name (Decorator.__name__ = orig.__name__).
    return {n: (type(m).__name__, m) for n, m in obj.named_children()}
