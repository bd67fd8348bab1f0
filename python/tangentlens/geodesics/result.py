"""Results: one batch of geodesics (:class:`Geodesic`) and a scan over many pairs (:class:`GeodesicScan`),
with plots and exact JSON round trips."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tangentlens.geodesics.optim import CONVERGED, MAX_ITERS, STATUS_NAMES

__all__ = ["GEODESIC_FORMAT", "SCAN_FORMAT", "Geodesic", "GeodesicScan", "efficiency"]

GEODESIC_FORMAT = "tangentlens-geodesic"
SCAN_FORMAT = "tangentlens-geodesic-scan"
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def efficiency(length: torch.Tensor, interp_length: torch.Tensor) -> torch.Tensor:
    """``min(length, interp_length) / interp_length``: the shortest path found (the optimised one, or the
    interpolation path where the optimiser found nothing shorter) over the interpolation path; <= 1.
    A pair of equal endpoints (interp_length 0) has efficiency 1."""
    best = torch.minimum(length, interp_length)
    return torch.where(interp_length > 0, best / interp_length.clamp_min(1e-300), torch.ones_like(best))


def _tensor_json(t: torch.Tensor) -> dict[str, Any]:
    return {
        "dtype": str(t.dtype).removeprefix("torch."),
        "shape": list(t.shape),
        "data": t.reshape(-1).tolist(),
    }


def _tensor_from(doc: Mapping[str, Any]) -> torch.Tensor:
    return torch.tensor(doc["data"], dtype=getattr(torch, doc["dtype"])).reshape(doc["shape"])


def _write_doc(doc: dict[str, Any], path: str | os.PathLike | None, indent: int | None) -> str:
    text = json.dumps(doc, indent=indent)
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


def _read_doc(source: str | os.PathLike, fmt: str) -> dict[str, Any]:
    text = str(source)
    if not text.lstrip().startswith("{"):
        text = Path(source).read_text(encoding="utf-8")
    doc = json.loads(text)
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"source: expected a {fmt!r} JSON document, got format {got!r}")
    return doc


@dataclass
class Geodesic:
    """Discrete geodesics between B pairs of latents, n points each (float64 tensors on the CPU).

    ``path [B, n, d]``: the energy-minimising curve (``path[:, 0] = z0``, ``path[:, -1] = z1``);
    ``interp_path``: the interpolation path it started from (lerp / slerp at ``t_i = i / (n - 1)``);
    ``energy``, ``length`` and ``interp_energy``, ``interp_length`` [B]: ``E = (n - 1) Σ d_i`` and
    ``L = Σ sqrt(d_i)`` of the two, ``d_i`` the squared embedding distance of consecutive points;
    ``speeds``, ``interp_speeds`` [B, n - 1]: ``(n - 1) sqrt(d_i)``, the speed on each segment (constant
    along a geodesic); ``iterations`` [B] and ``status`` [B] (0 converged, 1 max_iters, 2 stalled: no
    step lowered the energy any more, which happens at its rounding level).

    Refinement (``refine=True``): the converged curve with every segment's midpoint inserted (2n - 1
    points) is optimised again; ``length_fine``, ``interp_length_fine``, ``energy_fine``,
    ``iterations_fine``, ``status_fine`` [B] are its numbers. The discrete length converges from below
    as n grows (chords cut the curve's corners in embedding space), so ``length_change`` =
    ``(length_fine - length) / length_fine`` says how well ``points`` resolves the length.
    """

    path: torch.Tensor
    interp_path: torch.Tensor
    energy: torch.Tensor
    length: torch.Tensor
    interp_energy: torch.Tensor
    interp_length: torch.Tensor
    speeds: torch.Tensor
    interp_speeds: torch.Tensor
    iterations: torch.Tensor
    status: torch.Tensor
    config: dict[str, Any]
    length_fine: torch.Tensor | None = None
    interp_length_fine: torch.Tensor | None = None
    energy_fine: torch.Tensor | None = None
    iterations_fine: torch.Tensor | None = None
    status_fine: torch.Tensor | None = None
    seconds: float = 0.0
    evaluations: int = 0
    _render: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False, compare=False)

    # -- numbers ---------------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.path.shape[0]

    @property
    def points(self) -> int:
        return self.path.shape[1]

    @property
    def efficiency(self) -> torch.Tensor:
        """[B] ``min(length, interp_length) / interp_length`` (<= 1; see :func:`efficiency`)."""
        return efficiency(self.length, self.interp_length)

    @property
    def efficiency_fine(self) -> torch.Tensor | None:
        if self.length_fine is None or self.interp_length_fine is None:
            return None
        return efficiency(self.length_fine, self.interp_length_fine)

    @property
    def no_shortcut(self) -> torch.Tensor:
        """[B] bool: the optimised path is not shorter than the interpolation path (efficiency is 1: the
        interpolation path is already a geodesic up to the discretisation, e.g. any path of a linear
        generator, or the optimiser found no shorter one)."""
        return self.length >= self.interp_length

    @property
    def converged(self) -> torch.Tensor:
        """[B] bool: status 0 (and the refinement's too, when it ran)."""
        ok = self.status == CONVERGED
        return ok if self.status_fine is None else ok & (self.status_fine == CONVERGED)

    @property
    def length_change(self) -> torch.Tensor | None:
        """[B] ``(length_fine - length) / length_fine`` (None without refinement)."""
        if self.length_fine is None:
            return None
        return (self.length_fine - self.length) / self.length_fine.clamp_min(1e-300)

    def status_names(self) -> list[str]:
        return [STATUS_NAMES[int(s)] for s in self.status]

    def __str__(self) -> str:
        eff = self.efficiency
        text = (
            f"Geodesic: {self.batch_size} pairs, {self.points} points; efficiency mean "
            f"{float(eff.mean()):.4g} (min {float(eff.min()):.4g}); "
            f"{int(self.converged.sum())}/{self.batch_size} converged"
        )
        change = self.length_change
        if change is not None:
            text += f"; length change at {2 * self.points - 1} points: max {float(change.abs().max()):.2g}"
        return text

    # -- images and plots ------------------------------------------------------------------------------
    def images(
        self, which: str = "geodesic", pair: int | None = None, *, generator: object = None
    ) -> torch.Tensor:
        """Images along a path, in [-1, 1]: ``[B, n, C, H, W]`` or, for one ``pair``, ``[n, C, H, W]``.
        ``which``: ``"geodesic"`` or ``"interpolation"``. A Geodesic read from JSON needs the
        ``generator`` it was computed with."""
        if which not in ("geodesic", "interpolation"):
            raise ValueError(f"which: expected 'geodesic' or 'interpolation', got {which!r}")
        render = (
            self._render
            if generator is None
            else renderer(generator, self.config["space"], self.path.shape[-1])
        )
        if render is None:
            raise ValueError(
                "images: this Geodesic has no generator attached (it was read from JSON); pass generator="
            )
        path = self.path if which == "geodesic" else self.interp_path
        if pair is not None:
            if (
                isinstance(pair, bool)
                or not isinstance(pair, int)
                or not -self.batch_size <= pair < self.batch_size
            ):
                raise ValueError(f"pair: expected an int in [0, {self.batch_size}), got {pair!r}")
            path = path[pair : pair + 1 if pair != -1 else None]
        B, n, d = path.shape
        with torch.no_grad():
            img = render(path.reshape(B * n, d)).detach().cpu()
        img = img.reshape(B, n, *img.shape[1:])
        return img[0] if pair is not None else img

    def plot(self, pair: int = 0, *, columns: int = 8, fig: Any = None) -> Any:
        """The geodesic's and the interpolation path's image strips (``columns`` evenly spaced points,
        endpoints included) above the speed profile of both; returns the matplotlib figure."""
        import matplotlib.pyplot as plt

        geo, lin = self.images("geodesic", pair), self.images("interpolation", pair)
        n = geo.shape[0]
        cols = sorted({round(i * (n - 1) / (max(columns, 2) - 1)) for i in range(max(columns, 2))})
        if fig is None:
            fig = plt.figure(figsize=(1.1 * len(cols), 1.1 * 2 + 2.4))
        grid = fig.add_gridspec(3, len(cols), height_ratios=[1, 1, 2.2], hspace=0.35)
        for row, (imgs, name) in enumerate(((geo, "geodesic"), (lin, self.config.get("init", "interp")))):
            for j, i in enumerate(cols):
                ax = fig.add_subplot(grid[row, j])
                x = ((imgs[i].float() + 1) / 2).clamp(0, 1)
                x = x[0] if x.shape[0] == 1 else x.permute(1, 2, 0)
                ax.imshow(x.numpy(), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(name, fontsize=8)
                if row == 0:
                    ax.set_title(f"t={i / (n - 1):.2f}", fontsize=7)
        ax = fig.add_subplot(grid[2, :])
        t = ((torch.arange(n - 1, dtype=torch.float64) + 0.5) / (n - 1)).numpy()
        eff = float(self.efficiency[pair])
        geo_label = f"geodesic (length {float(self.length[pair]):.4g})"
        ax.plot(t, self.speeds[pair].numpy(), "o-", ms=3, label=geo_label)
        init = self.config.get("init", "interpolation")
        label = f"{init} (length {float(self.interp_length[pair]):.4g})"
        ax.plot(t, self.interp_speeds[pair].numpy(), "s-", ms=3, label=label)
        ax.set_xlabel("t")
        ax.set_ylabel("speed (n - 1) sqrt(d_i)")
        ax.set_ylim(bottom=0)
        ax.set_title(f"pair {pair}: efficiency {eff:.4g} ({self.config.get('distance', '')})", fontsize=9)
        ax.legend(fontsize=7)
        return fig

    # -- JSON ------------------------------------------------------------------------------------------
    _TENSORS = (
        "path",
        "interp_path",
        "energy",
        "length",
        "interp_energy",
        "interp_length",
        "speeds",
        "interp_speeds",
        "iterations",
        "status",
        "length_fine",
        "interp_length_fine",
        "energy_fine",
        "iterations_fine",
        "status_fine",
    )

    def to_json(self, path: str | os.PathLike | None = None, *, indent: int | None = None) -> str:
        """Every tensor (floats written exactly: ``from_json`` round-trips) and the configuration."""
        doc = {
            "format": GEODESIC_FORMAT,
            "version": 1,
            "config": self.config,
            "seconds": self.seconds,
            "evaluations": self.evaluations,
            "tensors": {
                k: _tensor_json(getattr(self, k)) for k in self._TENSORS if getattr(self, k) is not None
            },
            "efficiency": self.efficiency.tolist(),
        }
        return _write_doc(doc, path, indent)

    @classmethod
    def from_json(cls, source: str | os.PathLike) -> Geodesic:
        """A Geodesic from :meth:`to_json`'s text or a path to it (without its generator: ``images`` and
        ``plot`` then need ``generator=``)."""
        doc = _read_doc(source, GEODESIC_FORMAT)
        tensors = {k: _tensor_from(v) for k, v in doc["tensors"].items()}
        return cls(
            config=doc["config"],
            seconds=float(doc["seconds"]),
            evaluations=int(doc["evaluations"]),
            **tensors,
        )


def renderer(
    generator: object, space: str, width: int | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x [N, d] -> images [N, C, H, W]`` in [-1, 1] of the generator in ``space`` (constant noise),
    x cast to the generator's dtype and device."""
    from tangentlens._operator import _adapter

    ad = _adapter(generator, width)
    fn = ad.latent_function(space)[0]  # type: ignore[arg-type]

    def render(x: torch.Tensor) -> torch.Tensor:
        return fn(x.to(ad.device, ad.param_dtype or torch.float32))

    return render


@dataclass
class GeodesicScan:
    """Per-pair rows of :func:`tangentlens.geodesics.scan` (float64 tensors on the CPU, N = num_pairs):
    ``length``, ``interp_length``, ``energy``, ``interp_energy``, ``iterations``, ``status``, with
    refinement ``length_fine``, ``interp_length_fine``, ``status_fine``, with ``store_paths``
    ``path`` [N, n, d]; ``config``: the arguments that determine the rows."""

    config: dict[str, Any]
    rows: dict[str, torch.Tensor]
    resumed_from: int = 0
    seconds: float = 0.0

    @property
    def num_pairs(self) -> int:
        return self.rows["length"].shape[0]

    @property
    def efficiency(self) -> torch.Tensor:
        return efficiency(self.rows["length"], self.rows["interp_length"])

    @property
    def efficiency_fine(self) -> torch.Tensor | None:
        if "length_fine" not in self.rows:
            return None
        return efficiency(self.rows["length_fine"], self.rows["interp_length_fine"])

    @property
    def converged(self) -> torch.Tensor:
        ok = self.rows["status"] == CONVERGED
        return ok if "status_fine" not in self.rows else ok & (self.rows["status_fine"] == CONVERGED)

    def histogram(self, bins: int = 20, *, fine: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(counts [bins], edges [bins + 1])`` of the per-pair efficiency over [min, 1]."""
        eff = self.efficiency_fine if fine else self.efficiency
        if eff is None:
            raise ValueError("histogram: fine=True needs a scan run with refine=True")
        lo = min(float(eff.min()), 1.0 - 1e-6)
        edges = torch.linspace(lo, 1.0, bins + 1, dtype=torch.float64)
        counts = torch.histc(eff, bins=bins, min=lo, max=1.0).to(torch.int64)
        return counts, edges

    def aggregate(self, *, bootstrap: int = 1000, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
        """Mean efficiency with a percentile bootstrap CI over pairs, its quantiles and histogram, the mean
        lengths and excess of the interpolation path (``interp_length / length - 1``), and the counts of
        converged / max_iters / stalled pairs and of pairs without a shortcut. With refinement, the same
        efficiency summary at 2n - 1 points and the largest length change."""
        from tangentlens.ppl import bootstrap_ci

        def summary(eff: torch.Tensor, fine: bool) -> dict[str, Any]:
            q = torch.quantile(eff, torch.tensor(QUANTILES, dtype=torch.float64))
            lo, hi = (math.nan, math.nan)
            if bootstrap:
                lo, hi = bootstrap_ci(eff, None, None, replicates=bootstrap, level=level, seed=seed)
            counts, edges = self.histogram(20, fine=fine)
            return {
                "mean": float(eff.mean()),
                "ci_low": lo,
                "ci_high": hi,
                "ci_level": level,
                "std": float(eff.std()) if eff.numel() > 1 else 0.0,
                **{f"q{int(100 * p):02d}": float(v) for p, v in zip(QUANTILES, q, strict=True)},
                "histogram": {"counts": counts.tolist(), "edges": edges.tolist()},
            }

        L, Li = self.rows["length"], self.rows["interp_length"]
        st = self.rows["status"]
        out: dict[str, Any] = {
            "num_pairs": self.num_pairs,
            "efficiency": summary(self.efficiency, False),
            "length_mean": float(L.mean()),
            "interp_length_mean": float(Li.mean()),
            "interp_excess_mean": float((Li / torch.minimum(L, Li).clamp_min(1e-300) - 1).mean()),
            "converged": int((st == CONVERGED).sum()),
            "max_iters": int((st == MAX_ITERS).sum()),
            "stalled": int((st == 2).sum()),
            "no_shortcut": int((L >= Li).sum()),
            "iterations_mean": float(self.rows["iterations"].double().mean()),
        }
        fine = self.efficiency_fine
        if fine is not None:
            out["efficiency_fine"] = summary(fine, True)
            change = (self.rows["length_fine"] - L) / self.rows["length_fine"].clamp_min(1e-300)
            out["length_change_max"] = float(change.abs().max())
            out["length_change_median"] = float(change.abs().median())
        return out

    def __str__(self) -> str:
        a = self.aggregate(bootstrap=200)
        e = a["efficiency"]
        return (
            f"geodesic efficiency {e['mean']:.4g} (95% CI {e['ci_low']:.4g} .. {e['ci_high']:.4g}; "
            f"median {e['q50']:.4g}) over {a['num_pairs']} pairs, {a['converged']} converged; the "
            f"interpolation path is {100 * a['interp_excess_mean']:.3g} % longer on average"
        )

    def plot_histogram(
        self, ax: Any = None, *, bins: int = 20, fine: bool = False, label: str | None = None
    ) -> Any:
        """Histogram of the per-pair efficiency with its mean (matplotlib axes)."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3.2))
        counts, edges = self.histogram(bins, fine=fine)
        eff = self.efficiency_fine if fine else self.efficiency
        assert eff is not None
        ax.stairs(counts.numpy(), edges.numpy(), fill=True, alpha=0.6, label=label)
        ax.axvline(float(eff.mean()), color="C3", label=f"mean {float(eff.mean()):.3g}")
        ax.set_xlabel("efficiency = geodesic length / interpolation length")
        ax.set_ylabel("pairs")
        ax.legend(fontsize=7)
        return ax

    def to_json(self, path: str | os.PathLike | None = None, *, indent: int | None = None) -> str:
        """The rows (exact floats), the configuration and the aggregate (for readers)."""
        doc = {
            "format": SCAN_FORMAT,
            "version": 1,
            "config": self.config,
            "num_pairs": self.num_pairs,
            "resumed_from": self.resumed_from,
            "seconds": self.seconds,
            "rows": {k: _tensor_json(v) for k, v in self.rows.items()},
            "aggregate": self.aggregate(),
        }
        return _write_doc(doc, path, indent)

    @classmethod
    def from_json(cls, source: str | os.PathLike) -> GeodesicScan:
        doc = _read_doc(source, SCAN_FORMAT)
        rows = {k: _tensor_from(v) for k, v in doc["rows"].items()}
        return cls(doc["config"], rows, int(doc["resumed_from"]), float(doc["seconds"]))
