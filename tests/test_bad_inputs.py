"""The bad-input catalogue of issue 17 (the API; the command line is in test_bad_inputs_cli.py).

Every case is a bad or suspicious input and what it must get: an exception of a given type whose message
names the offending argument (or sample), or one warning that says what happened and what to do. None of
them may return a number silently. Cheap models only: a linear-tanh generator, a tiny StyleGAN2, pixel
distances (and a random-weight LPIPS where LPIPS itself is the subject).
"""

from __future__ import annotations

import functools
import itertools
import re
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch

from tangentlens import _extension, geodesics, linear_gaussian, ops, paths, spectra
from tangentlens._streaming import CheckpointError
from tangentlens.distances import DistanceOutputError
from tangentlens.generators import NvidiaPickleError, as_generator, load_stylegan2_pkl
from tangentlens.generators.outputs import (
    GeneratorOutputError,
    GeneratorRangeWarning,
    NondeterministicGeneratorError,
)
from tangentlens.jvp import jvp as engine_jvp
from tangentlens.lpips import LPIPS
from tangentlens.metrics import MIG, ContinuousFactorsWarning, mig, sap
from tangentlens.models.stylegan2 import StyleGAN2Generator
from tangentlens.ppl import DegenerateResultWarning, FiniteDifferenceWarning, ppl, ppl_distances

_A = torch.randn(4, 3 * 8 * 8, generator=torch.Generator().manual_seed(0)) / 2


def lin(z: torch.Tensor) -> torch.Tensor:
    """A plain callable generator: z [N, 4] -> images [N, 3, 8, 8] in (-1, 1)."""
    return torch.tanh(z @ _A.to(z.dtype)).reshape(-1, 3, 8, 8)


def _tiny_stylegan() -> StyleGAN2Generator:
    return StyleGAN2Generator(z_dim=8, w_dim=8, img_resolution=8, channel_base=64, channel_max=8, seed=1)


G = _tiny_stylegan()
Z = torch.randn(4, 4, generator=torch.Generator().manual_seed(1))
_R = np.random.default_rng(0)
Z1 = torch.randn(4, 4, generator=torch.Generator().manual_seed(2))
FAST = dict(distance="l2", progress=False, bootstrap=0)


def run_ppl(gen: object = lin, **kw: object) -> object:
    args = dict(num_samples=4, batch_size=4, z_dim=4, space="z", **FAST)
    if not callable(gen) or isinstance(gen, StyleGAN2Generator):
        args.pop("z_dim")
    args.update(kw)
    return ppl(gen, **args)


def run_pd(gen: object = lin, z0: object = Z, z1: object = Z1, t: object = 0.0, **kw: object) -> object:
    args = dict(space="z", distance="l2")
    args.update(kw)
    return ppl_distances(gen, z0, z1, t, **args)


# ---- generators with something wrong ----------------------------------------------------------------------


def tuple_gen(z):  # noqa: ANN001, ANN201
    return lin(z), z


def fewer_rows(z):  # noqa: ANN001, ANN201
    return lin(z)[: max(1, z.shape[0] // 2)]


def more_rows(z):  # noqa: ANN001, ANN201
    return torch.cat([lin(z), lin(z)])


def numpy_gen(z):  # noqa: ANN001, ANN201
    return lin(z).numpy()


def int_gen(z):  # noqa: ANN001, ANN201
    return (lin(z) * 100).to(torch.int32)


def uint8_gen(z):  # noqa: ANN001, ANN201
    return ((lin(z) + 1) * 127.5).round().to(torch.uint8)


def flat_gen(z):  # noqa: ANN001, ANN201
    return lin(z).flatten(1)


def wrong_zdim(z):  # noqa: ANN001, ANN201  (really takes 6 latents)
    return torch.tanh(z @ torch.ones(6, 3 * 8 * 8)).reshape(-1, 3, 8, 8)


def nan_gen(z):  # noqa: ANN001, ANN201
    x = lin(z).clone()
    x[2] = float("nan")
    return x


def inf_gen(z):  # noqa: ANN001, ANN201
    x = lin(z).clone()
    x[1, 0, 0, 0] = float("inf")
    return x


def noisy_gen(z):  # noqa: ANN001, ANN201  (noise drawn inside the forward)
    return lin(z) + 0.1 * torch.randn(z.shape[0], 3, 8, 8)


def unit_range_gen(z):  # noqa: ANN001, ANN201  ([0, 1] images)
    return (lin(z) + 1) / 2


def byte_range_gen(z):  # noqa: ANN001, ANN201  ([0, 255] float images)
    return (lin(z) + 1) * 127.5


def round_gen(z):  # noqa: ANN001, ANN201  (quantised inside: no derivative)
    return ((lin(z) + 1) * 127.5).round() / 127.5 - 1


def sqrt_gen(z):  # noqa: ANN001, ANN201  (finite images, NaN derivative at z = 0)
    return (z.square().sum(1, keepdim=True).sqrt() * torch.ones(1, 3 * 8 * 8)).reshape(-1, 3, 8, 8)


def nan_distance(x0, x1):  # noqa: ANN001, ANN201
    return torch.full((x0.shape[0],), float("nan"), dtype=x0.dtype)


def scalar_distance(x0, x1):  # noqa: ANN001, ANN201
    return (x0 - x1).square().mean()


def rows_distance(x0, x1):  # noqa: ANN001, ANN201
    return (x0 - x1).flatten(1).square().sum(1)[:1]


def list_distance(x0, x1):  # noqa: ANN001, ANN201
    return [1.0] * x0.shape[0]


def _hz(n: int = 2, d: int = 4) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(3))


def run_geo(gen: object = lin, z0: object = Z, z1: object = Z1, **kw: object) -> object:
    """A cheap geodesic: 3 points, 2 iterations, no refinement, pixel distance."""
    args = dict(distance="l2", points=3, max_iters=2, refine=False)
    args.update(kw)
    return geodesics.geodesic(gen, z0, z1, **args)


def run_geo_scan(gen: object = lin, num_pairs: int = 4, **kw: object) -> object:
    args = dict(z_dim=4, distance="l2", points=3, max_iters=2, refine=False, batch_size=2, progress=False)
    args.update(kw)
    return geodesics.scan(gen, num_pairs, **args)


def detach_gen(z):  # noqa: ANN001, ANN201  (the images carry no derivative)
    return lin(z).detach()


def nan_at_origin_gen(z):  # noqa: ANN001, ANN201  (NaN images at z = 0 only: inside the path, not at its ends)
    bad = (z.norm(dim=1) < 1e-6).reshape(-1, 1, 1, 1)
    return torch.where(bad, float("nan"), lin(z))


# (id, call, exception type, regex the message must match: it names the argument or the sample)
RAISES: list[tuple[str, Callable[[], object], type[BaseException], str]] = [
    # ppl: arguments
    ("ppl-preset", lambda: run_ppl(preset="nvidia"), ValueError, "preset: expected one of"),
    ("ppl-space", lambda: run_ppl(space="x"), ValueError, "space: expected one of"),
    ("ppl-sampling", lambda: run_ppl(sampling="middle"), ValueError, "sampling: expected one of"),
    ("ppl-method", lambda: run_ppl(method="exact"), ValueError, "method: expected one of"),
    ("ppl-z_interp", lambda: run_ppl(z_interp="cubic"), ValueError, "z_interp: expected one of"),
    ("ppl-precision", lambda: run_ppl(precision="fp8"), ValueError, "precision: expected one of"),
    ("ppl-epsilon-zero", lambda: run_ppl(epsilon=0.0), ValueError, r"epsilon: expected a number in \(0, 1\)"),
    ("ppl-epsilon-str", lambda: run_ppl(epsilon="1e-4"), TypeError, "epsilon: expected"),
    ("ppl-crop", lambda: run_ppl(crop="yes"), TypeError, "crop: expected True or False"),
    ("ppl-resize", lambda: run_ppl(resize="cubic:64"), ValueError, "resize: expected"),
    ("ppl-num_samples-1", lambda: run_ppl(num_samples=1), ValueError, "num_samples: expected an int >= 2"),
    ("ppl-num_samples-bool", lambda: run_ppl(num_samples=True), TypeError, "num_samples: expected"),
    ("ppl-num_samples-float", lambda: run_ppl(num_samples=8.0), TypeError, "num_samples: expected"),
    ("ppl-batch_size", lambda: run_ppl(batch_size=0), ValueError, "batch_size: expected an int >= 1"),
    ("ppl-seed-negative", lambda: run_ppl(seed=-1), ValueError, r"seed: expected an int in \[0, 2\*\*64\)"),
    ("ppl-seed-too-big", lambda: run_ppl(seed=2**64), ValueError, "seed: expected"),
    ("ppl-bootstrap", lambda: run_ppl(bootstrap=-1), ValueError, "bootstrap: expected a non-negative int"),
    ("ppl-target_rel_ci", lambda: run_ppl(target_rel_ci=0), ValueError, "target_rel_ci: expected a positive"),
    ("ppl-checkpoint_every", lambda: run_ppl(checkpoint_every=-1), ValueError, "checkpoint_every: expected"),
    ("ppl-check_range", lambda: run_ppl(check_range="no"), TypeError, "check_range: expected True or False"),
    ("ppl-resume_unverified", lambda: run_ppl(resume_unverified=1), TypeError, "resume_unverified: expected"),
    ("ppl-output_range", lambda: run_ppl(output_range="0_2"), ValueError, "output_range: expected one of"),
    ("ppl-z_dim-zero", lambda: run_ppl(z_dim=0), ValueError, "z_dim: expected an int >= 1"),
    (
        "ppl-z_dim-missing",
        lambda: ppl(lin, num_samples=4, **FAST),
        ValueError,
        "z_dim: a plain callable.*z_dim=",
    ),
    (
        "ppl-labels-unconditional",
        lambda: run_ppl(G, labels=torch.ones(3, 2)),
        ValueError,
        "labels: .*unconditional",
    ),
    (
        "ppl-torch_fidelity-num_samples",
        lambda: run_ppl(preset="torch_fidelity", num_samples=None),
        ValueError,
        "num_samples: the preset",
    ),
    (
        "ppl-torchmetrics-full",
        lambda: run_ppl(preset="torchmetrics", sampling="full"),
        ValueError,
        "sampling: the torchmetrics protocol",
    ),
    ("ppl-space-w-callable", lambda: run_ppl(space="w"), ValueError, "space='w'.*no mapping network"),
    (
        "ppl-fd-fp16",
        lambda: run_ppl(method="fd", precision="fp16"),
        ValueError,
        "precision='fp16' with method='fd'",
    ),
    (
        "ppl-fd-half-generator",
        lambda: run_ppl(_tiny_stylegan().half(), method="fd", space="w"),
        ValueError,
        "float16 generator.*method='fd'",
    ),
    (
        "ppl-adapter-z_dim-mismatch",
        lambda: run_ppl(as_generator(lin, z_dim=4), z_dim=5),
        ValueError,
        "z_dim: the adapter says z_dim=4",
    ),
    # ppl_distances: arguments
    ("pd-z0-type", lambda: run_pd(z0=[[0.0] * 4]), TypeError, r"z0: expected a tensor \[N, z_dim\]"),
    ("pd-z0-1d", lambda: run_pd(z0=Z[0], z1=Z1[0]), ValueError, r"z0: expected a tensor \[N, z_dim\]"),
    (
        "pd-z0-int",
        lambda: run_pd(z0=Z.long(), z1=Z1.long()),
        TypeError,
        "z0: expected a floating-point tensor",
    ),
    (
        "pd-z0-nan",
        lambda: run_pd(z0=Z.clone().index_fill_(0, torch.tensor([2]), float("nan"))),
        ValueError,
        r"z0: NaN values at rows \[2\]",
    ),
    ("pd-z1-shape", lambda: run_pd(z1=Z1[:3]), ValueError, "z1: expected the shape of z0"),
    (
        "pd-z0-z_dim",
        lambda: run_pd(G, z0=_hz(4, 5), z1=_hz(4, 5)),
        ValueError,
        "z0: expected z_dim = 8 columns, got 5",
    ),
    (
        "pd-t-length",
        lambda: run_pd(t=torch.zeros(3)),
        ValueError,
        r"t: expected a number or a tensor \[N=4\]",
    ),
    (
        "pd-t-range",
        lambda: run_pd(t=torch.tensor([0.0, 0.5, 1.5, 0.2])),
        ValueError,
        "t: expected positions in .* 1.5 for sample 2",
    ),
    ("pd-t-negative", lambda: run_pd(t=-0.1), ValueError, r"t: expected positions in \[0, 1\]"),
    ("pd-t-nan", lambda: run_pd(t=float("nan")), ValueError, "t: expected positions"),
    ("pd-t-str", lambda: run_pd(t="0"), TypeError, "t: expected a number or a tensor"),
    (
        "pd-labels-rows",
        lambda: run_pd(G, z0=_hz(4, 8), z1=_hz(4, 8), labels=torch.zeros(3, 2)),
        ValueError,
        "labels: expected 4 rows",
    ),
    (
        "pd-noise-rows",
        lambda: run_pd(G, z0=_hz(4, 8), z1=_hz(4, 8), noise=[torch.zeros(3, 1, 4, 4)]),
        ValueError,
        r"noise\[0\]: expected 4 rows",
    ),
    ("pd-batch_size", lambda: run_pd(batch_size=0), ValueError, "batch_size: expected an int >= 1"),
    # the generator boundary: what comes back
    (
        "gen-tuple-jvp",
        lambda: run_pd(tuple_gen),
        GeneratorOutputError,
        "expected a tensor of images, got a tuple of 2",
    ),
    ("gen-tuple-fd", lambda: run_pd(tuple_gen, method="fd"), GeneratorOutputError, "got a tuple"),
    (
        "gen-fewer-rows-jvp",
        lambda: run_pd(fewer_rows),
        GeneratorOutputError,
        "one row per latent, 4 rows, got 2 rows",
    ),
    (
        "gen-fewer-rows-fd",
        lambda: run_pd(fewer_rows, method="fd"),
        GeneratorOutputError,
        "8 rows, got 4 rows",
    ),
    ("gen-more-rows", lambda: run_pd(more_rows), GeneratorOutputError, "one row per latent"),
    ("gen-fewer-rows-ppl", lambda: run_ppl(fewer_rows), GeneratorOutputError, "one row per latent"),
    (
        "gen-numpy",
        lambda: run_pd(numpy_gen, method="fd"),
        GeneratorOutputError,
        "expected a tensor of images, got ndarray",
    ),
    ("gen-int32", lambda: run_pd(int_gen, method="fd"), GeneratorOutputError, "int32 is not an image dtype"),
    (
        "gen-uint8-jvp",
        lambda: run_pd(uint8_gen, output_range="0_255"),
        GeneratorOutputError,
        "uint8 has no derivative.*method='fd'",
    ),
    (
        "gen-z_dim-wrong",
        lambda: run_pd(wrong_zdim, method="fd"),
        GeneratorOutputError,
        r"latents of shape \(8, 4\) \(z_dim=4\).*z_dim=",
    ),
    ("gen-z_dim-wrong-jvp", lambda: run_pd(wrong_zdim), GeneratorOutputError, r"\(z_dim=4\)"),
    ("gen-not-images", lambda: run_pd(flat_gen), GeneratorOutputError, r"images \[N, 1 or 3, H, W\]"),
    (
        "gen-nan",
        lambda: run_pd(nan_gen, method="fd"),
        FloatingPointError,
        r"NaN values at sample indices \[2\]$",
    ),
    ("gen-nan-jvp", lambda: run_pd(nan_gen), FloatingPointError, r"NaN values at sample indices \[2\]"),
    (
        "gen-inf",
        lambda: run_pd(inf_gen, method="fd"),
        FloatingPointError,
        r"inf values at sample indices \[1\]$",
    ),
    (
        "gen-nondeterministic",
        lambda: run_pd(noisy_gen, method="fd"),
        NondeterministicGeneratorError,
        "same latents",
    ),
    (
        "gen-nondeterministic-ppl",
        lambda: run_ppl(noisy_gen, method="fd"),
        NondeterministicGeneratorError,
        "method='jvp'",
    ),
    ("as_generator-int", lambda: as_generator(42), TypeError, "generator: expected"),
    (
        "as_generator-z_type",
        lambda: as_generator(
            type("TF", (torch.nn.Module,), {"z_size": 4, "z_type": "cauchy", "forward": lambda s, z: z})()
        ),
        ValueError,
        "z_type",
    ),
    ("load-pkl-missing", lambda: load_stylegan2_pkl("/nonexistent/G.pkl"), FileNotFoundError, "G.pkl"),
    (
        "load-pkl-garbage",
        lambda: load_stylegan2_pkl(_garbage_file("G.pkl")),
        NvidiaPickleError,
        "G.pkl: not a readable NVIDIA network pickle",
    ),
    # distances
    (
        "dist-nan",
        lambda: run_pd(distance=nan_distance, method="fd"),
        FloatingPointError,
        r"distance: NaN for sample indices \[0, 1, 2, 3\]",
    ),
    (
        "dist-scalar",
        lambda: run_pd(distance=scalar_distance, method="fd"),
        DistanceOutputError,
        "distance: .*got a scalar",
    ),
    ("dist-scalar-jvp", lambda: run_pd(distance=scalar_distance), DistanceOutputError, "got a scalar"),
    (
        "dist-rows",
        lambda: run_pd(distance=rows_distance, method="fd"),
        DistanceOutputError,
        r"distance: expected one value per sample, a tensor \[4\], got shape \(1,\)",
    ),
    ("dist-list", lambda: run_pd(distance=list_distance, method="fd"), DistanceOutputError, "got list"),
    ("dist-name", lambda: run_pd(distance="lpips-resnet"), ValueError, "distance: expected 'lpips-vgg16'"),
    ("dist-type", lambda: run_pd(distance=3), TypeError, "distance: expected a name"),
    # spectra
    (
        "spec-nan-images",
        lambda: spectra.spectrum(nan_gen, _hz(3)),
        FloatingPointError,
        r"NaN values at sample indices \[2\]",
    ),
    (
        "spec-nan-derivative",
        lambda: spectra.spectrum(sqrt_gen, torch.zeros(2, 4)),
        FloatingPointError,
        r"NaN in the metric M at points \[0, 1\]",
    ),
    (
        "spec-nan-derivative-lanczos",
        lambda: spectra.spectrum(sqrt_gen, torch.zeros(2, 4), method="lanczos", k=1),
        FloatingPointError,
        "NaN in the products M v at points",
    ),
    ("spec-tuple", lambda: spectra.spectrum(tuple_gen, _hz()), GeneratorOutputError, "got a tuple"),
    (
        "spec-fewer-rows",
        lambda: spectra.spectrum(fewer_rows, _hz(4)),
        GeneratorOutputError,
        "one row per latent, 4 rows, got 2",
    ),
    (
        "spec-uint8",
        lambda: spectra.spectrum(uint8_gen, _hz(), output_range="0_255"),
        GeneratorOutputError,
        "uint8 has no derivative",
    ),
    ("spec-z_dim", lambda: spectra.spectrum(lin, _hz(2, 4), z_dim=5), ValueError, r"z: expected \[B, 5\]"),
    (
        "spec-output_range",
        lambda: spectra.spectrum(lin, _hz(), output_range="0_2"),
        ValueError,
        "output_range: expected one of",
    ),
    (
        "spec-check_range",
        lambda: spectra.spectrum(lin, _hz(), check_range=1),
        TypeError,
        "check_range: expected",
    ),
    (
        "spec-first_index-wrap",
        lambda: spectra.spectrum(lin, _hz(3), first_index=2**64 - 2),
        ValueError,
        "first_index \\+ points: expected at most 2\\*\\*64",
    ),
    (
        "spec-z_dim-wrong-callable",
        lambda: spectra.spectrum(wrong_zdim, _hz()),
        GeneratorOutputError,
        r"\(z_dim=4\)",
    ),
    (
        "scan-checkpoint_every",
        lambda: spectra.scan(G, 2, checkpoint_every=-1.0, progress=False),
        ValueError,
        "checkpoint_every: expected",
    ),
    (
        "scan-store_eigenvectors",
        lambda: spectra.scan(G, 2, store_eigenvectors=1, progress=False),
        TypeError,
        "store_eigenvectors: expected",
    ),
    (
        "scan-num_points",
        lambda: spectra.scan(G, 0, progress=False),
        ValueError,
        "num_points: expected an int >= 1",
    ),
    (
        "scan-nan",
        lambda: spectra.scan(nan_gen, 3, z_dim=4, k=2, progress=False),
        FloatingPointError,
        r"NaN values at sample indices \[2\]",
    ),
    (
        "stats-rel_floor",
        lambda: spectra.Spectrum.from_metric(torch.eye(3)[None]).stats(rel_floor=0.0),
        ValueError,
        "rel_floor: expected a positive",
    ),
    (
        "stats-nan",
        lambda: spectra.stats(
            spectra.Spectrum(
                torch.tensor([[1.0, float("nan")]]), torch.eye(2)[None], torch.zeros(1, 2), "full"
            )
        ),
        FloatingPointError,
        r"eigenvalues: NaN values at points \[0\]",
    ),
    (
        "from_metric-shape",
        lambda: spectra.Spectrum.from_metric(torch.eye(3)),
        ValueError,
        r"M: expected \[B, d, d\]",
    ),
    ("trace-probes", lambda: spectra.trace(lin, _hz(), probes=True), TypeError, "probes: expected"),
    (
        "consistency-qf",
        lambda: spectra.consistency(quadratic_forms=torch.ones(1, 3)),
        ValueError,
        "quadratic_forms: expected",
    ),
    ("aggregate-type", lambda: spectra.aggregate([1, 2]), TypeError, "per_point: expected a dict"),
    # geodesics: arguments (checked before the distance is built or the generator called)
    ("geo-generator", lambda: run_geo(42), TypeError, "^generator: expected a generator .* got int"),
    ("geo-scan-generator", lambda: run_geo_scan(42), TypeError, "^generator: expected .* got int"),
    ("geo-points", lambda: run_geo(points=2), ValueError, "points: expected an int >= 3, got 2"),
    ("geo-points-float", lambda: run_geo(points=4.0), TypeError, "points: expected an int >= 3, got 4.0"),
    ("geo-init", lambda: run_geo(init="cubic"), ValueError, "init: expected one of 'lerp', 'slerp'"),
    ("geo-constrain", lambda: run_geo(constrain="ball"), ValueError, "constrain: expected one of 'none'"),
    ("geo-method", lambda: run_geo(method="adam"), ValueError, "method: expected one of 'lbfgs'"),
    ("geo-tol-zero", lambda: run_geo(tol=0), ValueError, r"tol: expected a number in \(0, 1\), got 0"),
    ("geo-tol-one", lambda: run_geo(tol=1.0), ValueError, r"tol: expected a number in \(0, 1\)"),
    ("geo-tol-nan", lambda: run_geo(tol=float("nan")), ValueError, "tol: expected .* got nan"),
    ("geo-tol-str", lambda: run_geo(tol="1e-4"), TypeError, "tol: expected .* got '1e-4'"),
    ("geo-max_iters", lambda: run_geo(max_iters=0), ValueError, "max_iters: expected an int >= 1, got 0"),
    ("geo-refine", lambda: run_geo(refine=1), TypeError, "refine: expected True or False, got 1"),
    ("geo-memory", lambda: run_geo(memory=0), ValueError, "memory: expected an int >= 1"),
    ("geo-batch_size", lambda: run_geo(batch_size=0), ValueError, "batch_size: expected an int >= 1"),
    ("geo-space", lambda: run_geo(space="x"), ValueError, "space: expected one of"),
    ("geo-space-w-callable", lambda: run_geo(space="w"), ValueError, "space: 'w' needs a generator"),
    ("geo-precision", lambda: run_geo(precision="fp8"), ValueError, "precision: expected one of"),
    ("geo-chunk_size", lambda: run_geo(chunk_size=0), ValueError, "chunk_size: expected an int >= 1"),
    ("geo-distance-name", lambda: run_geo(distance="lpips-resnet"), ValueError, "distance: expected 'lpips"),
    ("geo-distance-type", lambda: run_geo(distance=3), TypeError, "distance: expected"),
    ("geo-z_dim-zero", lambda: run_geo(z_dim=0), ValueError, "z_dim: expected an int >= 1, got 0"),
    ("geo-z_dim-mismatch", lambda: run_geo(z_dim=5), ValueError, r"z0: expected \[B, 5\] .* got \(4, 4\)"),
    ("geo-output_range", lambda: run_geo(output_range="0_2"), ValueError, "output_range: expected one of"),
    ("geo-check_range", lambda: run_geo(check_range=1), TypeError, "check_range: expected True or False"),
    ("geo-z0-type", lambda: run_geo(z0=[[0.0] * 4]), TypeError, r"z0: expected a tensor \[B, d\], got list"),
    ("geo-z0-int", lambda: run_geo(z0=Z.long()), TypeError, "z0: expected a floating-point tensor"),
    ("geo-z0-1d", lambda: run_geo(z0=Z[0], z1=Z1[0]), ValueError, r"z0: expected points \[B, d\]"),
    (
        "geo-z0-nan",
        lambda: run_geo(z0=Z.clone().index_fill_(0, torch.tensor([2]), float("nan"))),
        ValueError,
        r"z0: expected finite values, got NaN values at rows \[2\]",
    ),
    ("geo-z1-inf", lambda: run_geo(z1=Z1 / 0), ValueError, "z1: expected finite values, got inf values"),
    ("geo-z1-shape", lambda: run_geo(z1=Z1[:3]), ValueError, "z1: expected the shape of z0"),
    (
        "geo-sphere-zero",
        lambda: run_geo(z0=Z.clone().index_fill_(0, torch.tensor([1]), 0.0), constrain="sphere"),
        ValueError,
        r"constrain='sphere': expected non-zero endpoints.*pairs \[1\]",
    ),
    # geodesics: the generator's output at the endpoints and along the path
    ("geo-tuple", lambda: run_geo(tuple_gen), GeneratorOutputError, "got a tuple of 2"),
    (
        "geo-fewer-rows",
        lambda: run_geo(fewer_rows),
        GeneratorOutputError,
        "one row per latent, 4 rows, got 2",
    ),
    ("geo-more-rows", lambda: run_geo(more_rows), GeneratorOutputError, "one row per latent"),
    (
        "geo-numpy",
        lambda: run_geo(numpy_gen),
        GeneratorOutputError,
        "expected a tensor of images, got ndarray",
    ),
    (
        "geo-uint8",
        lambda: run_geo(uint8_gen, output_range="0_255"),
        GeneratorOutputError,
        "uint8 has no derivative.*geodesics",
    ),
    (
        "geo-z_dim-wrong",
        lambda: run_geo(wrong_zdim),
        GeneratorOutputError,
        r"latents of shape \(4, 4\) \(z_dim=4\)",
    ),
    ("geo-nan", lambda: run_geo(nan_gen), FloatingPointError, r"NaN values at sample indices \[2\]"),
    (
        "geo-nan-z1",
        lambda: run_geo(nan_gen, z0=Z1, z1=Z),
        FloatingPointError,
        r"NaN values at sample indices \[2\]",
    ),
    (
        "geo-nondeterministic",
        lambda: run_geo(noisy_gen),
        NondeterministicGeneratorError,
        "same latents.*a quarter of the path from z0 to z1.*chase the noise",
    ),
    (
        "geo-rounded",
        lambda: run_geo(round_gen),
        GeneratorOutputError,
        "derivative along the interpolation path that is exactly 0.*efficiency 1",
    ),
    ("geo-detached", lambda: run_geo(detach_gen), GeneratorOutputError, "carries no gradient.*a detach"),
    (
        "geo-nan-derivative",  # the lerp of z and -z passes z = 0, a probed point
        lambda: run_geo(sqrt_gen, z1=-Z),
        FloatingPointError,
        r"derivative along the interpolation path: NaN values at pairs \[0, 1, 2, 3\]",
    ),
    (
        "geo-nan-gradient",  # z = 0 at t = 1/3: a point of the path, not a probed one
        lambda: run_geo(sqrt_gen, z1=-2 * Z, points=4),
        FloatingPointError,
        r"NaN or inf in the energy's gradient at pairs \[0, 1, 2, 3\]",
    ),
    (
        "geo-nan-inside",  # NaN images at t = 1/3 only
        lambda: run_geo(nan_at_origin_gen, z1=-2 * Z, points=4),
        FloatingPointError,
        r"geodesic: (interp_)?length: NaN values at pairs \[0, 1, 2, 3\]",
    ),
    # geodesics.scan
    ("geo-scan-num_pairs", lambda: run_geo_scan(num_pairs=0), ValueError, "num_pairs: expected an int >= 1"),
    (
        "geo-scan-batch_size",
        lambda: run_geo_scan(batch_size=0),
        ValueError,
        "batch_size: expected an int >= 1",
    ),
    ("geo-scan-seed", lambda: run_geo_scan(seed=-1), ValueError, r"seed: expected an int in \[0, 2\*\*64\)"),
    ("geo-scan-tol", lambda: run_geo_scan(tol=2), ValueError, r"tol: expected a number in \(0, 1\)"),
    ("geo-scan-points", lambda: run_geo_scan(points=1), ValueError, "points: expected an int >= 3"),
    ("geo-scan-checkpoint_every", lambda: run_geo_scan(checkpoint_every=-1), ValueError, "checkpoint_every"),
    ("geo-scan-store_paths", lambda: run_geo_scan(store_paths=1), TypeError, "store_paths: expected True or"),
    ("geo-scan-check_range", lambda: run_geo_scan(check_range="no"), TypeError, "check_range: expected"),
    ("geo-scan-resume_unverified", lambda: run_geo_scan(resume_unverified=1), TypeError, "resume_unverified"),
    ("geo-scan-dtype", lambda: run_geo_scan(dtype=torch.int32), TypeError, "dtype: expected one of float16"),
    ("geo-scan-output_range", lambda: run_geo_scan(output_range="0_2"), ValueError, "output_range: expected"),
    ("geo-scan-z_dim-missing", lambda: run_geo_scan(z_dim=None), ValueError, "z_dim: a plain callable"),
    (
        "geo-scan-nan",
        lambda: run_geo_scan(nan_gen, 3, batch_size=4),
        FloatingPointError,
        r"NaN values at sample indices \[2\]",
    ),
    (
        "geo-scan-nondeterministic",
        lambda: run_geo_scan(noisy_gen),
        NondeterministicGeneratorError,
        "same latents",
    ),
    ("geo-scan-fewer-rows", lambda: run_geo_scan(fewer_rows), GeneratorOutputError, "one row per latent"),
    # LPIPS
    (
        "lpips-0_255-as-1_1",
        lambda: LP()(torch.rand(2, 3, 16, 16) * 255, torch.rand(2, 3, 16, 16) * 255),
        ValueError,
        "x0: values in .*never negative.*input_range='0_255'",
    ),
    (
        "lpips-1_1-as-0_255",
        lambda: LP(input_range="0_255")(torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16)),
        ValueError,
        "x0: negative values.*input_range='-1_1'",
    ),
    (
        "lpips-8x8",
        lambda: LP()(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)),
        ValueError,
        "x0: expected images of at least 16x16 pixels.*got 8x8",
    ),
    (
        "lpips-alex-30",
        lambda: LPIPS("alex", pretrained=False)(torch.rand(1, 3, 30, 64), torch.rand(1, 3, 30, 64)),
        ValueError,
        "x0: expected images of at least 31x31",
    ),
    (
        "lpips-uint8",
        lambda: LP()(
            torch.zeros(1, 3, 16, 16, dtype=torch.uint8), torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
        ),
        TypeError,
        "x0: expected a floating-point tensor.*input_range='0_255'",
    ),
    (
        "lpips-2-channels",
        lambda: LP()(torch.rand(1, 2, 16, 16), torch.rand(1, 2, 16, 16)),
        ValueError,
        r"x0: expected images \[N, 3, H, W\]",
    ),
    (
        "lpips-dtype-pair",
        lambda: LP()(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16).double()),
        TypeError,
        "x1: expected the dtype of x0",
    ),
    (
        "lpips-check_range",
        lambda: LPIPS("vgg16", pretrained=False, check_range="no"),
        TypeError,
        "check_range: expected",
    ),
    (
        "lpips-tangents",
        lambda: LP().tangent_norms(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)),
        ValueError,
        r"v: expected shape \[1, K, 3, 16, 16\]",
    ),
    # counters, ops, impl
    (
        "philox-wrap",
        lambda: ops.philox_normal(0, 2**64 - 2, 5, 3),
        ValueError,
        r"start \+ count: expected at most 2\*\*64.*start 18446744073709551614 and count 5",
    ),
    (
        "philox-wrap-native",
        lambda: torch.ops.tangentlens.philox_normal_(torch.empty(5, 3), 0, -2, 0),
        RuntimeError,
        r"start \+ count: expected at most 2\^64",
    ),
    (
        "paths-wrap",
        lambda: paths.sample(0, 2**64 - 1, 2, 4),
        ValueError,
        r"start \+ count: expected at most 2\*\*64",
    ),
    ("philox-seed", lambda: ops.philox_normal(-1, 0, 2, 2), ValueError, "seed: expected an int in"),
    (
        "philox-dim-bool",
        lambda: ops.philox_normal(0, 0, 2, True),
        TypeError,
        "dim: expected a non-negative int",
    ),
    (
        "philox-stream",
        lambda: ops.philox_normal(0, 0, 2, 2, stream=2**32),
        ValueError,
        "stream: expected an int in",
    ),
    (
        "impl-env",
        lambda: _with_env_impl("nativ", lambda: ops.philox_normal(0, 0, 2, 2)),
        ValueError,
        r"\$TANGENTLENS_IMPL: expected one of 'auto', 'native', 'reference'.*'nativ'",
    ),
    ("impl-arg", lambda: ops.philox_normal(0, 0, 2, 2, impl="fast"), ValueError, "impl: expected 'auto'"),
    (
        "slerp-zero",
        lambda: paths.slerp(torch.zeros(2, 3), torch.ones(2, 3), 0.5),
        (ValueError, RuntimeError),
        "zero",
    ),
    # jvp
    (
        "jvp-primal-int",
        lambda: engine_jvp(lin, torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 1, 4, dtype=torch.long)),
        TypeError,
        "primal: expected a floating-point tensor",
    ),
    (
        "jvp-tangents-shape",
        lambda: engine_jvp(lin, Z, torch.zeros(4, 1, 5)),
        ValueError,
        "tangents: expected",
    ),
    (
        "jvp-chunk_size",
        lambda: engine_jvp(lin, Z, torch.zeros(4, 2, 4), chunk_size=0),
        ValueError,
        "chunk_size: expected",
    ),
    (
        "jvp-method",
        lambda: engine_jvp(lin, Z, torch.zeros(4, 1, 4), method="reverse"),
        ValueError,
        "method: expected",
    ),
    (
        "jvp-crosscheck",
        lambda: engine_jvp(lin, Z, torch.zeros(4, 1, 4), crosscheck=-1),
        ValueError,
        "crosscheck: expected",
    ),
    # linear_gaussian (checks that hold today; the module is being reworked in issue 16)
    (
        "lg-mi-overlap",
        lambda: linear_gaussian.gaussian_mi(np.eye(3), [0, 1], [1, 2]),
        ValueError,
        "a, b: expected disjoint",
    ),
    ("lg-config", lambda: linear_gaussian.parse_configuration("3,4"), ValueError, "config: expected"),
    ("lg-im-shape", lambda: linear_gaussian.im_score(np.eye(4), 3, 3), ValueError, "cov_xv: expected"),
    # metrics
    (
        "mig-nan",
        lambda: mig(np.full((30, 3), np.nan), np.zeros((30, 1))),
        ValueError,
        "codes must be finite; got NaN",
    ),
    (
        "mig-one-code",
        lambda: mig(_R.random((30, 1)), _R.integers(0, 3, (30, 1))),
        ValueError,
        "at least 2 codes",
    ),
    (
        "mig-bins",
        lambda: mig(_R.random((30, 2)), _R.integers(0, 3, (30, 1)), num_bins=0),
        ValueError,
        "num_bins must be a positive integer",
    ),
    (
        "mig-rows",
        lambda: mig(_R.random((30, 2)), _R.integers(0, 3, (29, 1))),
        ValueError,
        "same number of rows",
    ),
    (
        "MIG-update-code-columns",
        lambda: _mig_update([(3, 1), (2, 1)]),
        ValueError,
        "codes has 2 columns, the earlier batches 3",
    ),
    (
        "MIG-update-factor-columns",
        lambda: _mig_update([(3, 2), (3, 1)]),
        ValueError,
        "factors has 1 columns, the earlier batches 2",
    ),
    ("MIG-compute-empty", lambda: MIG().compute(), RuntimeError, r"compute\(\) called before any update"),
]


@functools.cache
def _lpips_cached(input_range: str) -> LPIPS:
    return LPIPS("vgg16", pretrained=False, input_range=input_range)


def LP(input_range: str = "-1_1") -> LPIPS:  # noqa: N802
    return _lpips_cached(input_range)


def _garbage_file(name: str) -> str:
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / name
    path.write_bytes(b"not a pickle")
    return str(path)


def _with_env_impl(value: str, fn: Callable[[], object]) -> object:
    saved = _extension._default_impl
    _extension._default_impl = value  # what TANGENTLENS_IMPL=value at import sets
    try:
        return fn()
    finally:
        _extension._default_impl = saved


def _mig_update(shapes: list[tuple[int, int]]) -> None:
    m = MIG()
    rng = np.random.default_rng(0)
    for c, f in shapes:
        m.update(rng.random((10, c)), rng.integers(0, 3, (10, f)))


@pytest.mark.parametrize("name, call, exc, pattern", RAISES, ids=[c[0] for c in RAISES])
def test_bad_input_raises(name, call, exc, pattern) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # each case is about its error; the warnings have their own cases
        with pytest.raises(exc) as info:
            call()
    assert re.search(pattern, str(info.value)), f"{name}: {info.value}"


# ---- suspicious but legal: exactly one warning that says what happened and what to do --------------------


WARNS: list[tuple[str, Callable[[], object], type[Warning], str]] = [
    (
        "range-0_1-as-1_1",
        lambda: run_ppl(unit_range_gen),
        GeneratorRangeWarning,
        "never negative.*output_range='0_1'.*check_range=False",
    ),
    (
        "range-0_255-as-1_1",
        lambda: run_ppl(byte_range_gen),
        GeneratorRangeWarning,
        "output_range='0_255'.*127.5",
    ),
    (
        "range-1_1-as-0_1",
        lambda: run_ppl(lin, output_range="0_1"),
        GeneratorRangeWarning,
        "clearly negative.*output_range='-1_1'",
    ),
    (
        "range-0_1-as-0_255",
        lambda: run_ppl(unit_range_gen, output_range="0_255"),
        GeneratorRangeWarning,
        "within \\[-1, 1\\].*output_range='0_1' or '-1_1'",
    ),
    (
        "range-1_1-as-0_255",
        lambda: run_ppl(lin, output_range="0_255"),
        GeneratorRangeWarning,
        "clearly negative.*output_range='-1_1'",
    ),
    (
        "range-spectrum",
        lambda: spectra.spectrum(unit_range_gen, _hz()),
        GeneratorRangeWarning,
        "never negative",
    ),
    (
        "range-spectrum-lpips",  # a warning from the engine, not LPIPS's own error
        lambda: spectra.spectrum(
            lambda z: torch.nn.functional.interpolate(byte_range_gen(z), size=(16, 16)), _hz(), distance=LP()
        ),
        GeneratorRangeWarning,
        "output_range='0_255'",
    ),
    (
        "range-geodesic",
        lambda: run_geo(unit_range_gen),
        GeneratorRangeWarning,
        "never negative.*output_range='0_1'.*check_range=False",
    ),
    (
        "range-geodesic-scan",  # one warning per run, not one per batch
        lambda: run_geo_scan(byte_range_gen, 6),
        GeneratorRangeWarning,
        "output_range='0_255'",
    ),
    (
        "range-geodesic-lpips",  # a warning from the engine, not LPIPS's own error
        lambda: run_geo(
            lambda z: torch.nn.functional.interpolate(byte_range_gen(z), size=(16, 16)),
            distance=LP(),
            max_iters=1,
        ),
        GeneratorRangeWarning,
        "output_range='0_255'",
    ),
    (
        "uint8-fd",
        lambda: run_ppl(uint8_gen, method="fd", output_range="0_255"),
        FiniteDifferenceWarning,
        "quantised images.*method='jvp'",
    ),
    (
        "quantised-float-fd",
        lambda: run_ppl(lambda z: byte_range_gen(z).round(), method="fd", output_range="0_255"),
        FiniteDifferenceWarning,
        "quantised",
    ),
    (
        "zero-tangents-jvp",
        lambda: run_ppl(round_gen),
        DegenerateResultWarning,
        "tangents are exactly 0.*method='fd'",
    ),
    ("tf32-fd", lambda: run_ppl(method="fd", precision="tf32"), FiniteDifferenceWarning, "TF32"),
    (
        "torch_fidelity-fd",
        lambda: run_ppl(preset="torch_fidelity", batch_size=4),
        FiniteDifferenceWarning,
        "uint8 images round away",
    ),
    (
        "mig-continuous",
        lambda: mig(_R.random((100, 3)), _R.random((100, 2))),
        ContinuousFactorsWarning,
        "factors column 0 has 100 distinct values.*histogram_discretize",
    ),
    (
        "sap-continuous",
        lambda: sap(_R.random((60, 2)), _R.random((60, 1)), _R.random((30, 2)), _R.random((30, 1))),
        ContinuousFactorsWarning,
        "continuous_factors=True",
    ),
]


@pytest.mark.parametrize("name, call, category, pattern", WARNS, ids=[c[0] for c in WARNS])
def test_suspicious_input_warns_once(name, call, category, pattern) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    ours = [w for w in caught if issubclass(w.category, category)]
    assert len(ours) == 1, (name, [str(w.message) for w in caught])
    assert re.search(pattern, str(ours[0].message)), f"{name}: {ours[0].message}"


def test_range_check_never_stops_a_run_and_can_be_silenced() -> None:
    """An untrained StyleGAN2 correctly declared [-1, 1] reaches values near 16: a warning at most, never
    an error, never advice that changes the number silently; check_range=False silences it."""

    def overshoot(z):  # noqa: ANN001, ANN202
        return 20 * lin(z)  # values up to ~20 in a legitimately declared [-1, 1] space

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = run_ppl(overshoot, num_samples=8)
    msgs = [str(w.message) for w in caught if issubclass(w.category, GeneratorRangeWarning)]
    assert len(msgs) == 1 and "check_range=False" in msgs[0] and "127.5" in msgs[0]  # says what it changes
    assert r.num_samples == 8 and any("output_range" in n for n in r.config["notes"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", GeneratorRangeWarning)
        quiet = run_ppl(overshoot, num_samples=8, check_range=False)
    assert torch.equal(quiet.distances, r.distances)  # the warning never changed the number


# ---- previously silent: now defined, recorded or refused (no number changes quietly) -----------------------


def test_half_generator_precision_is_recorded() -> None:
    r = run_ppl(_tiny_stylegan().half(), space="w", num_samples=4)
    assert r.config["precision"] == "fp16" and r.config["generator"]["dtype"] == "float16"
    assert any("float16" in n for n in r.config["notes"])


def test_epsilon_with_jvp_is_noted() -> None:
    r = run_ppl(method="jvp", epsilon=1e-3)
    assert any("epsilon=0.001: unused" in n for n in r.config["notes"])


def test_float64_images_into_float32_lpips_follow_the_images() -> None:
    x, y = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    d32 = LP()(x, y)
    d64 = LP()(x.double(), y.double())
    assert d64.dtype == torch.float64
    torch.testing.assert_close(d64.float(), d32, rtol=1e-4, atol=0)


def test_float64_generator_with_default_lpips() -> None:
    G64 = _tiny_stylegan().double()
    G64.img_resolution = 8
    up = lambda z: torch.nn.functional.interpolate(G64(z), size=(16, 16))  # noqa: E731
    r = ppl(
        as_generator(up, z_dim=8),
        num_samples=4,
        batch_size=4,
        space="z",
        distance=LP(),
        progress=False,
        bootstrap=0,
    )
    assert r.distances.dtype == torch.float64 and torch.isfinite(r.distances).all()


def test_grey_images_one_rule_for_ppl_and_spectra() -> None:
    def grey(z):  # noqa: ANN001, ANN202
        return torch.nn.functional.interpolate(lin(z)[:, :1], size=(16, 16), mode="bilinear")

    def rgb(z):  # noqa: ANN001, ANN202
        return grey(z).expand(-1, 3, -1, -1)

    lp = LP()
    torch.testing.assert_close(run_pd(grey, distance=lp), run_pd(rgb, distance=lp))
    a = spectra.spectrum(grey, _hz(), distance=lp).eigenvalues
    b = spectra.spectrum(rgb, _hz(), distance=lp).eigenvalues
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["full", "lanczos", "randomized"])
def test_rank_deficient_and_zero_metric_statistics_are_defined(method) -> None:
    """A generator that ignores latents (a VAE's collapsed latents) or is constant: M is rank deficient
    or 0, and the statistics are defined (they used to raise LinAlgError)."""

    def ignores(z):  # noqa: ANN001, ANN202
        return lin(torch.cat([z[:, :2], torch.zeros_like(z[:, 2:])], 1))

    def constant(z):  # noqa: ANN001, ANN202
        return 0 * lin(z) + 0.25

    k = None if method == "full" else 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeneratorRangeWarning)
        st = spectra.spectrum(ignores, _hz(3), method=method, k=k).stats()
        zero = spectra.spectrum(constant, _hz(3), method=method, k=k).stats()
    assert torch.equal(st["rank"], torch.full((3,), 2.0))
    assert all(torch.isfinite(v).all() for v in st.values())
    assert torch.equal(zero["trace"], torch.zeros(3)) and torch.equal(zero["rank"], torch.zeros(3))
    if method == "full":
        assert st["condition_number"][0] == pytest.approx(1e12)
        assert torch.isinf(zero["log_det"]).all() and (zero["log_det"] < 0).all()
        assert torch.isinf(zero["condition_number"]).all() and torch.equal(
            zero["column_orthogonality"], torch.zeros(3)
        )
    r = spectra.scan(as_generator(ignores, z_dim=4), 3, k=2, progress=False, method=method, num_directions=0)
    assert torch.equal(r.stats["rank"], torch.full((3,), 2.0))


def test_stylegan2_mapping_is_a_real_copy_for_torch_func() -> None:
    ws = G.mapping(_hz(2, 8), None)
    assert ws.stride(1) != 0  # not an expanded view
    v = torch.randn_like(ws)
    _, tangent = torch.func.jvp(lambda w: G.synthesis(w, noise_mode="const"), (ws,), (v,))
    assert tangent.shape == (2, 3, 8, 8) and torch.isfinite(tangent).all()
    ws[:, 0] += 1.0  # in place on one ws leaves the others
    assert not torch.equal(ws[:, 0], ws[:, 1])


# ---- checkpoints: a resume refuses another generator or distance, compared by fingerprint ----------------


def _scale_gen(c: float) -> Callable:
    def gen(z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(c * z @ _A).reshape(-1, 3, 8, 8)

    return gen


def gen_default(z, k=1.0):  # noqa: ANN001, ANN201
    return torch.tanh(k * z @ _A).reshape(-1, 3, 8, 8)


def gen_default2(z, k=2.0):  # noqa: ANN001, ANN201
    return torch.tanh(k * z @ _A).reshape(-1, 3, 8, 8)


def dist_a(x0, x1):  # noqa: ANN001, ANN201
    return (x0 - x1).flatten(1).square().sum(1)


def dist_b(x0, x1):  # noqa: ANN001, ANN201
    return 2 * (x0 - x1).flatten(1).square().sum(1)


RESUMES = [
    ("another-function", lambda: lin, lambda: gen_default2, "generator"),
    ("another-closure-value", lambda: _scale_gen(1.0), lambda: _scale_gen(1.5), "generator"),
    ("another-default", lambda: gen_default, lambda: functools.partial(gen_default, k=3.0), "generator"),
    ("another-module-weight", _tiny_stylegan, lambda: _edited_stylegan(), "generator"),
]


def _edited_stylegan() -> StyleGAN2Generator:
    g = _tiny_stylegan()
    with torch.no_grad():
        g.mapping.fc0.weight[0, 0] *= 1.0001  # one weight, by 0.01 %
    return g


def _ckpt_run(gen: object, ckpt, **kw):  # noqa: ANN001, ANN202
    space = "w" if isinstance(gen, StyleGAN2Generator) else "z"
    args = dict(num_samples=8, batch_size=4, space=space, checkpoint=ckpt, checkpoint_every=0, **FAST)
    if space == "z":
        args["z_dim"] = 4
    args.update(kw)
    return ppl(gen, **args)


@pytest.mark.parametrize("name, first, second, what", RESUMES, ids=[r[0] for r in RESUMES])
def test_checkpoint_refuses_another_generator(name, first, second, what, tmp_path) -> None:
    ck = tmp_path / "run.ckpt"
    _ckpt_run(first(), ck, num_samples=4)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(ck))}.*another configuration.*{what}"):
        _ckpt_run(second(), ck)
    assert _ckpt_run(first(), ck).resumed_from == 4  # the same one resumes


def test_checkpoint_refuses_another_distance(tmp_path) -> None:
    ck = tmp_path / "run.ckpt"
    _ckpt_run(lin, ck, num_samples=4, distance=dist_a)
    with pytest.raises(CheckpointError, match="distance"):
        _ckpt_run(lin, ck, distance=dist_b)
    lp = LPIPS("vgg16", pretrained=False)
    up = lambda z: torch.nn.functional.interpolate(lin(z), size=(16, 16))  # noqa: E731
    ck2 = tmp_path / "lp.ckpt"
    _ckpt_run(up, ck2, num_samples=4, distance=lp)
    with torch.no_grad():
        lp.lin0[0] += 0.5  # a distance's parameters
    with pytest.raises(CheckpointError, match="distance"):
        _ckpt_run(up, ck2, distance=lp)


def test_unverifiable_generator_needs_explicit_resume(tmp_path) -> None:
    counter = itertools.count()  # state held in C: its fingerprint cannot be computed

    def gen(z: torch.Tensor) -> torch.Tensor:
        _ = counter
        return lin(z)

    ck = tmp_path / "run.ckpt"
    first = _ckpt_run(gen, ck, num_samples=4)
    assert "fingerprint_unverified" in first.config["generator"]
    with pytest.raises(CheckpointError, match=r"cannot verify.*itertools\.count.*resume_unverified=True"):
        _ckpt_run(gen, ck)
    assert _ckpt_run(gen, ck, resume_unverified=True).resumed_from == 4


def test_corrupted_checkpoint_names_the_checkpoint(tmp_path) -> None:
    ck = tmp_path / "run.ckpt"
    _ckpt_run(lin, ck, num_samples=4)
    ck.write_bytes(ck.read_bytes()[:100])
    with pytest.raises(CheckpointError) as info:
        _ckpt_run(lin, ck)
    msg = str(info.value)
    assert str(ck) in msg and "truncated" in msg and "weights_only" not in msg
    ck.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(ck))}.*not a torch.save file"):
        _ckpt_run(lin, ck)


def test_scan_checkpoint_refuses_another_generator(tmp_path) -> None:
    ck = tmp_path / "scan.ckpt"
    kw = dict(k=2, progress=False, checkpoint=ck, num_directions=0, method="full")
    spectra.scan(as_generator(_scale_gen(1.0), z_dim=4), 2, **kw)
    with pytest.raises(CheckpointError, match="generator"):
        spectra.scan(as_generator(_scale_gen(2.0), z_dim=4), 4, **kw)


def test_geodesics_scan_checkpoint_refuses_another_generator(tmp_path) -> None:
    from tangentlens import geodesics

    ck = tmp_path / "geo.ckpt"
    kw = dict(points=4, progress=False, checkpoint=ck, refine=False, max_iters=3)
    geodesics.scan(as_generator(_scale_gen(1.0), z_dim=4), 2, **kw)
    with pytest.raises(CheckpointError, match="generator"):
        geodesics.scan(as_generator(_scale_gen(2.0), z_dim=4), 4, **kw)


def test_geodesic_range_check_never_changes_the_result() -> None:
    """The range warning of a geodesic is a warning only: check_range=False silences it and the lengths are
    the same, and it is kept in config['notes']."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loud = run_geo(unit_range_gen)
    assert sum(issubclass(w.category, GeneratorRangeWarning) for w in caught) == 1
    assert any("never negative" in n for n in loud.config["notes"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", GeneratorRangeWarning)
        quiet = run_geo(unit_range_gen, check_range=False)
    assert torch.equal(loud.length, quiet.length) and "notes" not in quiet.config


def test_geodesic_nearly_deterministic_generator_is_noted_once() -> None:
    """Differences between two calls far below a segment of the path (GPU atomics) pass with one note per
    run, not one per batch."""

    def jitter(z):  # noqa: ANN001, ANN202
        return lin(z) + 1e-9 * torch.randn(z.shape[0], 3, 8, 8)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # max_iters
        res = run_geo_scan(jitter, 6)
    notes = [n for n in res.config["notes"] if "two calls on the same latents" in n]
    assert len(notes) == 1 and "of a quarter of the path from z0 to z1" in notes[0], res.config["notes"]


# ---- what the catalogue covers --------------------------------------------------------------------------


def test_catalogue_size() -> None:
    assert len(RAISES) + len(WARNS) + len(RESUMES) >= 80
