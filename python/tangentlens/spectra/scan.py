"""``scan``: the spectra of many latent points drawn from the counter-based sampler, streamed, resumable
and batch invariant, with their statistics (``ScanResult``)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tangentlens import ops
from tangentlens._checks import (
    check_bool,
    check_number,
    check_u64,
)
from tangentlens._checks import check_int as _check_int
from tangentlens._fingerprint import run_identity
from tangentlens._operator import _Operator
from tangentlens.generators.adapters import OutputRange
from tangentlens.generators.outputs import RangeMonitor
from tangentlens.jvp import Precision
from tangentlens.spectra.solve import (
    STREAM_DIRECTIONS,
    STREAM_LATENT,
    Method,
    Space,
    Via,
    _generator,
    _ranges_checked_here,
    _spectrum,
)
from tangentlens.spectra.statistics import aggregate, consistency

# ---- scan over many latent points -----------------------------------------------------------------------


SCAN_FORMAT = "tangentlens-spectra-scan"


@dataclass
class ScanResult:
    """Per-point rows of :func:`scan` (float64 tensors on the CPU, N = num_points).

    ``eigenvalues`` / ``error_bounds`` [N, k], ``iterations`` [N], ``stats`` {name: [N]} (SPEC 5, see
    :func:`stats`), ``quadratic_forms`` [N, n] (``vᵀ M v`` for n fixed random unit directions, exact),
    ``eigenvectors`` [N, d, k] when ``store_eigenvectors=True``, ``config``: the arguments that determine
    the rows.
    """

    config: dict[str, Any]
    eigenvalues: torch.Tensor
    error_bounds: torch.Tensor
    iterations: torch.Tensor
    stats: dict[str, torch.Tensor]
    quadratic_forms: torch.Tensor
    eigenvectors: torch.Tensor | None = None
    resumed_from: int = 0
    seconds: float = 0.0

    @property
    def num_points(self) -> int:
        return self.eigenvalues.shape[0]

    def aggregate(self) -> dict[str, dict[str, Any]]:
        """:func:`aggregate` of the statistics and the eigenvalues over the points."""
        return aggregate({**self.stats, "eigenvalues": self.eigenvalues})

    def consistency(self, k: int | None = None) -> dict[str, Any]:
        """:func:`consistency` over the points (Grassmann distances only with stored eigenvectors)."""
        return consistency(
            quadratic_forms=self.quadratic_forms if self.quadratic_forms.shape[1] >= 2 else None,
            eigenvectors=self.eigenvectors,
            k=k,
        )

    def _rows(self) -> dict[str, torch.Tensor]:
        rows = {
            "eigenvalues": self.eigenvalues,
            "error_bounds": self.error_bounds,
            "iterations": self.iterations,
            "quadratic_forms": self.quadratic_forms,
            **{f"stat.{k}": v for k, v in self.stats.items()},
        }
        if self.eigenvectors is not None:
            rows["eigenvectors"] = self.eigenvectors
        return rows

    @classmethod
    def _from_rows(
        cls, config: dict[str, Any], rows: Mapping[str, torch.Tensor], resumed_from: int, seconds: float
    ) -> ScanResult:
        return cls(
            config=dict(config),
            eigenvalues=rows["eigenvalues"],
            error_bounds=rows["error_bounds"],
            iterations=rows["iterations"],
            stats={k[5:]: v for k, v in rows.items() if k.startswith("stat.")},
            quadratic_forms=rows["quadratic_forms"],
            eigenvectors=rows.get("eigenvectors"),
            resumed_from=resumed_from,
            seconds=seconds,
        )

    def to_json(self, path: str | os.PathLike | None = None, *, indent: int | None = None) -> str:
        """The rows and configuration as JSON (floats written exactly: ``from_json`` round-trips), plus the
        aggregate for readers; written to ``path`` when given."""
        doc = {
            "format": SCAN_FORMAT,
            "version": 1,
            "config": self.config,
            "num_points": self.num_points,
            "resumed_from": self.resumed_from,
            "seconds": self.seconds,
            "rows": {
                k: {"dtype": str(v.dtype).replace("torch.", ""), "data": v.tolist()}
                for k, v in self._rows().items()
            },
            "aggregate": self.aggregate(),
        }
        text = json.dumps(doc, indent=indent)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, source: str | os.PathLike) -> ScanResult:
        """A ScanResult from :meth:`to_json`'s text or a path to it."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            text = Path(source).read_text(encoding="utf-8")
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != SCAN_FORMAT:
            raise ValueError(
                f"source: expected a {SCAN_FORMAT!r} JSON document, got format {doc.get('format')!r}"
            )
        rows = {k: torch.tensor(v["data"], dtype=getattr(torch, v["dtype"])) for k, v in doc["rows"].items()}
        return cls._from_rows(doc["config"], rows, int(doc["resumed_from"]), float(doc["seconds"]))

    def plot_eigenvalue_decay(
        self,
        ax: Any = None,
        *,
        bands: Sequence[tuple[float, float]] = ((0.05, 0.95), (0.25, 0.75)),
        normalize: bool = False,
    ) -> Any:
        """Median eigenvalue λ_i against i (log scale) with quantile bands over the points; ``normalize``
        divides each point's spectrum by its λ_1; values below 1e-16 λ_1 are drawn at that floor. Returns
        the matplotlib axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")  # axis labels stay inside when saved
        lam = self.eigenvalues.double()
        # float64 rounding level: exact zeros (e.g. z's radial direction, which the mapping normalises
        # away) would stretch the log axis over hundreds of decades
        lam = torch.maximum(lam, lam[:, :1].clamp_min(torch.finfo(torch.float64).tiny) * 1e-16)
        if normalize:
            lam = lam / lam[:, :1]
        i = torch.arange(1, lam.shape[1] + 1).numpy()
        for lo, hi in bands:
            q = torch.quantile(lam, torch.tensor([lo, hi], dtype=torch.float64), dim=0).numpy()
            ax.fill_between(i, q[0], q[1], alpha=0.25, color="C0", lw=0, label=f"{100 * lo:g}-{100 * hi:g} %")
        ax.plot(i, lam.median(0).values.numpy(), color="C0", lw=1.5, label="median")
        ax.set_yscale("log")
        ax.set_xlabel("index i")
        ax.set_ylabel("λ_i / λ_1" if normalize else "eigenvalue λ_i of M")
        ax.set_title(f"spectrum of M = JᵀJ over {self.num_points} points")
        ax.legend(fontsize="small")
        return ax

    def plot_alignment(self, ax: Any = None, *, transpose: bool = False) -> Any:
        """Heat map of the mean |V| over the points ([d latent axes, k eigenvectors], or |V|ᵀ): an
        axis-aligned metric shows a permutation pattern. Needs ``store_eigenvectors=True``."""
        import matplotlib.pyplot as plt

        if self.eigenvectors is None:
            raise ValueError(
                "plot_alignment: expected a scan with eigenvectors, got none (run scan(..., "
                "store_eigenvectors=True))"
            )
        if ax is None:
            _, ax = plt.subplots(figsize=(4.5, 4), layout="constrained")  # axis labels stay inside when saved
        A = self.eigenvectors.double().abs().mean(0)
        if transpose:
            A = A.T
        im = ax.imshow(A.numpy(), aspect="auto", cmap="viridis", vmin=0.0, interpolation="nearest")
        ax.set_xlabel("latent axis" if transpose else "eigenvector (descending λ)")
        ax.set_ylabel("eigenvector (descending λ)" if transpose else "latent axis")
        ax.set_title("mean |V| over points")
        ax.figure.colorbar(im, ax=ax)
        return ax


def scan(
    generator: object,
    num_points: int,
    seed: int = 0,
    *,
    k: int | None = 32,
    distance: object = "l2",
    space: Space = "z",
    method: Method = "auto",
    via: Via = "gram",
    oversample: int = 10,
    iters: int | None = None,
    tol: float = 1e-3,
    batch_size: int = 8,
    num_directions: int = 16,
    store_eigenvectors: bool = False,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: float = 60.0,
    progress: bool = True,
    precision: Precision = "fp32",
    chunk_size: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    z_dim: int | None = None,
    output_range: OutputRange | None = None,
    check_range: bool = True,
    resume_unverified: bool = False,
) -> ScanResult:
    """Spectra at ``num_points`` latent points, streamed (``tangentlens._streaming.stream``).

    Point i is ``z_i = philox_normal(seed, i, 1, z_dim)`` (mapped to w / w+ for those spaces) and its random
    start block is row i of another counter stream, so every row's inputs depend only on (seed, i): other
    batch sizes give the same rows up to float rounding (the kernels round differently per batch shape),
    the same batch size gives them bit for bit, on any number of processes (torch.distributed ranks share
    the work) and when resumed from ``checkpoint`` (written atomically every ``checkpoint_every`` seconds;
    it refuses another configuration, generator or distance, compared by fingerprint, and one whose
    fingerprint cannot be computed reliably unless ``resume_unverified=True``). ``generator`` is anything
    :func:`tangentlens.generators.as_generator` takes (a plain callable z -> tensor needs ``z_dim``; its
    image range is ``output_range``, default ``"-1_1"``). Other arguments as :func:`spectrum`
    (``check_range`` warns at most once per run); ``num_directions`` fixed random unit directions give the
    exact quadratic forms ``vᵀ M v`` per point for :func:`consistency`; ``dtype`` / ``device`` default to
    the generator's parameters'.
    """
    _check_int(num_points, "num_points", 1)
    _check_int(batch_size, "batch_size", 1)
    _check_int(num_directions, "num_directions", 0)
    check_u64(seed, "seed")
    check_bool(store_eigenvectors, "store_eigenvectors")
    check_bool(check_range, "check_range")
    check_bool(resume_unverified, "resume_unverified")
    checkpoint_every = check_number(checkpoint_every, "checkpoint_every", 0)
    if z_dim is not None:
        z_dim = _check_int(z_dim, "z_dim", 1)
    op = _Operator(
        _generator(generator, z_dim, output_range, None), distance, space, precision, chunk_size, z_dim=z_dim
    )
    ad = op.adapter
    monitor = RangeMonitor(ad.output_range, check_range)
    d = op.dim
    kk = d if k is None else _check_int(k, "k", 1, d)
    dtype = dtype or ad.dtype
    device = torch.device(device) if device is not None else ad.device
    directions = torch.zeros(0, d, dtype=torch.float64)
    if num_directions:
        directions = ops.philox_normal(
            seed, 0, num_directions, d, stream=STREAM_DIRECTIONS, dtype=torch.float64
        )
        directions = directions / directions.norm(dim=1, keepdim=True)

    def points(start: int, count: int) -> torch.Tensor:
        z = ops.philox_normal(seed, start, count, ad.z_dim, stream=STREAM_LATENT, dtype=dtype, device=device)
        return op.from_latents(z)

    @_ranges_checked_here
    def compute(start: int, count: int) -> dict[str, torch.Tensor]:
        x = points(start, count)
        sp = _spectrum(op, x, monitor, kk, method, via, oversample, iters, tol, seed, None, start)
        if num_directions == 0:
            qf = torch.zeros(count, 0, dtype=torch.float64)
        elif sp.metric is not None:
            qf = sp.quadratic_forms(directions)
        else:
            qf = op.sqnorms(x, directions.to(x.device, x.dtype).expand(count, -1, -1).contiguous())
        its = sp.iterations if sp.iterations is not None else torch.zeros(count, dtype=torch.int64)
        rows = {
            "eigenvalues": sp.eigenvalues,
            "error_bounds": sp.error_bounds,
            "iterations": its,
            "quadratic_forms": qf,
            **{f"stat.{n}": v for n, v in sp.stats().items()},
        }
        if store_eigenvectors:
            rows["eigenvectors"] = sp.eigenvectors
        return {n: v.cpu() for n, v in rows.items()}

    identity, unverified = run_identity(ad, op.distance)
    config = {
        "kind": "tangentlens.spectra.scan",
        **identity,
        "seed": seed,
        "k": kk,
        "space": space,
        "method": method,
        "via": via,
        "oversample": oversample,
        "iters": iters,
        "tol": tol,
        "precision": precision,
        "num_directions": num_directions,
        "store_eigenvectors": store_eigenvectors,
        "dtype": str(dtype),
    }
    from tangentlens._streaming import stream

    res = stream(
        compute,
        num_samples=num_points,
        batch_size=batch_size,
        config=config,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        progress=progress,
        desc="tangentlens spectrum",
        unit="point",
        device=device,
        unverified=unverified,
        resume_unverified=resume_unverified,
    )
    return ScanResult._from_rows(config, res.rows, res.resumed_from, res.seconds)
