"""``PPLResult``: the number, its statistics, every sample's distance, the resolved configuration and
the versions; text, JSON and histogram."""

from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

# ---- result ---------------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    import tangentlens

    return {
        "tangentlens": tangentlens.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


@dataclass
class PPLResult:
    """A PPL run: the trimmed mean and its uncertainty, every sample's distance (index = sample index), the
    kept mask and the resolved configuration."""

    mean: float
    std: float
    sem: float
    ci_low: float
    ci_high: float
    num_samples: int
    num_kept: int
    lo: float
    hi: float
    distances: torch.Tensor  # float64 [num_samples]
    kept: torch.Tensor  # bool [num_samples]
    config: dict[str, Any]
    versions: dict[str, str] = field(default_factory=_versions)
    ci_level: float = 0.95
    stopped_early: bool = False
    resumed_from: int = 0
    seconds: float = 0.0

    @property
    def samples_per_second(self) -> float:
        return (self.num_samples - self.resumed_from) / self.seconds if self.seconds > 0 else math.nan

    @property
    def distance(self) -> str:
        """What the distances were measured with: ``"lpips-vgg16 v0.1 (torchvision vgg16-397923af.pth +
        lpips v0.1 vgg.pth)"``, ``"lpips-vgg16 (NVIDIA vgg16.pt)"``, ``"l2 (pixels)"``, ..."""
        d = self.config.get("distance") or {}
        return str(d.get("label") or d.get("name") or "unknown")

    def __str__(self) -> str:
        half = (self.ci_high - self.ci_low) / 2
        c = self.config
        return (
            f"PPL {self.mean:.4g} (95% CI {self.ci_low:.4g} .. {self.ci_high:.4g}, +-{half:.3g}; "
            f"std {self.std:.4g}; {self.num_kept}/{self.num_samples} samples kept; "
            f"preset {c.get('preset')}, {c.get('space')}/{c.get('sampling')}, method {c.get('method')}, "
            f"precision {c.get('precision')}; distance {self.distance})"
        )

    def to_json(self, path: str | Path | None = None, *, include_distances: bool = True) -> str:
        data = {k: v for k, v in asdict(self).items() if k not in ("distances", "kept")}
        data["samples_per_second"] = self.samples_per_second
        data["summary"] = str(self)  # names the distance, the precision, the method and the preset
        if include_distances:
            data["distances"] = self.distances.tolist()
            data["kept"] = self.kept.tolist()
        text = json.dumps(data, indent=1, default=str)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> PPLResult:
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text()
        data = json.loads(text)
        data.pop("samples_per_second", None)
        data.pop("summary", None)
        d = torch.tensor(data.pop("distances", []), dtype=torch.float64)
        k = torch.tensor(data.pop("kept", []), dtype=torch.bool)
        return cls(distances=d, kept=k, **data)

    def plot_histogram(self, ax: Any = None, bins: int = 100, log: bool = False) -> Any:
        """Histogram of the per-sample distances with the trimming thresholds and the mean (matplotlib)."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")  # axis labels stay inside when saved
        d = self.distances.numpy()
        if d.size == 0:
            raise ValueError(
                "plot_histogram: this result holds no per-sample distances (to_json without them)"
            )
        ax.hist(d, bins=np.geomspace(max(d.min(), 1e-12), d.max(), bins) if log else bins, color="0.6")
        if log:
            ax.set_xscale("log")
        for x, s in ((self.lo, "--"), (self.hi, "--"), (self.mean, "-")):
            ax.axvline(x, color="C3", linestyle=s)
        ax.set_xlabel("per-sample path length")
        ax.set_ylabel("samples")
        ax.set_title(f"PPL {self.mean:.4g} [{self.ci_low:.4g}, {self.ci_high:.4g}]")
        return ax
