"""A drop-in for ``torchmetrics.image.PerceptualPathLength`` on the tangentlens engine.

Change one import::

    # from torchmetrics.image import PerceptualPathLength
    from tangentlens.torchmetrics import PerceptualPathLength

Same constructor arguments, same ``update(generator)`` / ``compute() -> (mean, std, distances)``, the same
protocol (``generator.sample(n)`` latents drawn twice from the global RNG, class labels from
``torch.randint``, lerp at t = 0, images in [0, 255], LPIPS with torchmetrics' eps, resize to ``resize``,
both discard quantiles 'lower'), with these differences:

* ``batch_size`` is honoured (torchmetrics' class ignores its own);
* ``higher_is_better = False`` (a shorter path is smoother);
* ``method="jvp"`` (an extra keyword) computes the exact eps -> 0 limit instead of the finite difference;
* ``interpolation_method="slerp_unit"`` starts from the normalised path point: torchmetrics compares
  ``G(z0)`` with ``G(normalise(slerp_any(z0, z1, eps)))``, a jump from ``|z0|`` to the unit sphere for any
  generator that does not normalise its input; here both points lie on the normalised path.
  ``"slerp_any"`` (the raw vectors, norms interpolated) and ``"lerp"`` are torchmetrics' paths exactly;
* ``resize`` applies to a custom ``sim_net`` module too, as the argument says: torchmetrics resizes only
  inside its own LPIPS, so a module passed as ``sim_net`` sees the generator's resolution there (pass
  ``resize=None`` to reproduce that).

Importing this module needs torchmetrics installed.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

try:
    from torchmetrics import Metric
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tangentlens.torchmetrics needs torchmetrics (pip install torchmetrics); the engine itself is "
        "tangentlens.ppl"
    ) from exc

from tangentlens.lpips import LPIPS
from tangentlens.ppl import PRESETS, ppl_distances, trim

__all__ = ["PerceptualPathLength"]

_NETS = {"vgg": "vgg16", "alex": "alex", "squeeze": "squeeze"}
# torchmetrics' interpolation names -> the engine's paths (tangentlens.paths.slerp_raw_with_tangent)
_INTERP = {"lerp": "lerp", "slerp_any": "slerp_any", "slerp_unit": "slerp_any_unit"}


class PerceptualPathLength(Metric):
    """Perceptual Path Length with torchmetrics' interface (module docstring)."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = True

    def __init__(
        self,
        num_samples: int = 10_000,
        conditional: bool = False,
        batch_size: int = 128,
        interpolation_method: Literal["lerp", "slerp_any", "slerp_unit"] = "lerp",
        epsilon: float = 1e-4,
        resize: int | None = 64,
        lower_discard: float | None = 0.01,
        upper_discard: float | None = 0.99,
        sim_net: nn.Module | Literal["alex", "vgg", "squeeze"] = "vgg",
        method: Literal["fd", "jvp"] = "fd",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        for name, v in (("num_samples", num_samples), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        if not isinstance(conditional, bool):
            raise ValueError(f"conditional: expected a bool, got {conditional!r}")
        if interpolation_method not in _INTERP:
            raise ValueError(
                "interpolation_method: expected 'lerp', 'slerp_any' or 'slerp_unit', "
                f"got {interpolation_method!r}"
            )
        if not (isinstance(epsilon, (int, float)) and epsilon > 0):
            raise ValueError(f"epsilon: expected a positive float, got {epsilon!r}")
        if resize is not None and (isinstance(resize, bool) or not isinstance(resize, int) or resize < 1):
            raise ValueError(f"resize: expected a positive int or None, got {resize!r}")
        for name, q in (("lower_discard", lower_discard), ("upper_discard", upper_discard)):
            if q is not None and not (isinstance(q, float) and 0 <= q <= 1):
                raise ValueError(f"{name}: expected a float in [0, 1] or None, got {q!r}")
        if not isinstance(sim_net, nn.Module) and sim_net not in _NETS:
            raise ValueError(f"sim_net: expected 'alex', 'vgg', 'squeeze' or an nn.Module, got {sim_net!r}")
        if method not in ("fd", "jvp"):
            raise ValueError(f"method: expected 'fd' or 'jvp', got {method!r}")
        self.num_samples, self.conditional, self.batch_size = num_samples, conditional, batch_size
        self.interpolation_method, self.epsilon, self.resize = interpolation_method, float(epsilon), resize
        self.lower_discard, self.upper_discard, self.method = lower_discard, upper_discard, method
        self.net = (
            sim_net if isinstance(sim_net, nn.Module) else LPIPS(_NETS[sim_net], eps_mode="torchmetrics")
        )
        self.generator: Any = None

    def update(self, generator: Any) -> None:
        """Store the generator (``sample(n)``, ``forward(z[, labels])`` in [0, 255]; ``num_classes`` when
        conditional)."""
        if not hasattr(generator, "sample") or not callable(generator.sample):
            raise NotImplementedError("generator: expected a `sample(num_samples)` method returning latents")
        if self.conditional and not hasattr(generator, "num_classes"):
            raise AttributeError("generator: conditional=True needs a `num_classes` attribute")
        self.generator = generator

    def compute(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mean, std, distances)`` of the kept per-sample distances, as torchmetrics returns them."""
        G = self.generator
        if G is None:
            raise RuntimeError("compute: call update(generator) first")
        device = next((p.device for p in G.parameters()), None) if isinstance(G, nn.Module) else None
        z0 = G.sample(self.num_samples)
        z1 = G.sample(self.num_samples)
        labels = torch.randint(0, int(G.num_classes), (self.num_samples,)) if self.conditional else None
        d = ppl_distances(
            G,
            z0,
            z1,
            0.0,
            preset="torchmetrics",
            space="z",
            z_interp=_INTERP[self.interpolation_method],  # type: ignore[arg-type]
            method=self.method,
            epsilon=self.epsilon,
            resize="none" if self.resize is None else f"area_or_bilinear:{self.resize}",
            distance=self.net,
            labels=labels,
            batch_size=self.batch_size,
            device=device,
        )
        p = PRESETS["torchmetrics"]
        lower = None if self.lower_discard is None else (100 * self.lower_discard, p.lower[1])
        upper = None if self.upper_discard is None else (100 * self.upper_discard, p.upper[1])
        kept, _, _ = trim(d, lower, upper)
        x = d[torch.from_numpy(kept)]
        return x.mean(), x.std(), x
