"""The geodesic solvers' boundary (issue 17's rules, with its shared checks).

* :func:`check_settings`: every scalar argument of :func:`~tangentlens.geodesics.geodesic` and
  :func:`~tangentlens.geodesics.scan`, checked before any work is done (no distance weights loaded, no
  generator called): the message names the argument, what was expected and what came.
* :func:`probe`: before a batch of pairs is optimised, the generator at the endpoints by a plain call (a
  failure names the latents' shape and z_dim; a tuple or another number of rows than latents is refused;
  NaN / inf images name the pairs; the values are compared with the declared ``output_range``, one warning
  per run), the same endpoints again (a generator whose output is random would make the optimiser chase its
  noise: refused), a reverse pass (an output that carries no gradient, detached: refused), and the
  derivative along the interpolation path (exactly 0 everywhere while the images vary: rounded or
  quantised output, and the "geodesic" would be the starting path with an efficiency of 1: refused;
  NaN / inf: refused, naming the pairs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tangentlens._checks import check_bool, check_choice, check_int, check_number, nonfinite_rows
from tangentlens._operator import _Operator, _probe
from tangentlens.generators.outputs import GeneratorOutputError, RangeMonitor, check_determinism
from tangentlens.geodesics.curves import interpolation_path

__all__ = ["INITS", "CONSTRAINTS", "METHODS", "Settings", "check_settings", "probe"]

INITS = ("lerp", "slerp")
CONSTRAINTS = ("none", "sphere")
METHODS = ("lbfgs", "gauss-newton")

# what a generator whose output is random does to the energy (check_determinism's consequence)
RANDOMNESS = (
    "every evaluation of the curve energy would add its randomness to each segment's squared distance, so "
    "the optimiser would chase the noise and the lengths would measure it, not the path. Make its forward "
    "deterministic (eval() for dropout, constant noise inputs)"
)
# how check_determinism's note (nearly deterministic output) begins
_NOTE_START = "generator: two calls on the same latents"
# an output without a derivative, and what it would do
_NO_DERIVATIVE = "generator output ({kind}): the embedding of the images (F = φ ∘ G)"
_CONSEQUENCE = (
    "so the energy has no gradient and the geodesic would be the starting path (efficiency 1): return float "
    "images that carry the derivative"
)
# the interior points of the interpolation path where the derivative is probed (t = 1/4, 1/2, 3/4)
PROBE_POINTS = 5


@dataclass(frozen=True)
class Settings:
    """The checked optimiser settings shared by :func:`geodesic` and :func:`scan`."""

    points: int
    init: str
    constrain: str
    method: str
    max_iters: int | None
    tol: float
    refine: bool
    memory: int


def check_settings(
    *,
    points: object,
    init: object,
    constrain: object,
    method: object,
    max_iters: object,
    tol: object,
    refine: object,
    memory: object,
) -> Settings:
    """The arguments as :class:`Settings`, or the first bad one named."""
    return Settings(
        points=check_int(points, "points", 3),
        init=check_choice(init, "init", INITS),  # type: ignore[arg-type]
        constrain=check_choice(constrain, "constrain", CONSTRAINTS),  # type: ignore[arg-type]
        method=check_choice(method, "method", METHODS),  # type: ignore[arg-type]
        max_iters=None if max_iters is None else check_int(max_iters, "max_iters", 1),
        tol=check_number(tol, "tol", 0, 1, lo_open=True, hi_open=True),
        refine=check_bool(refine, "refine"),
        memory=check_int(memory, "memory", 1),
    )


def probe(
    op: _Operator,
    x0: torch.Tensor,
    x1: torch.Tensor,
    init: str,
    first_index: int,
    monitor: RangeMonitor | None,
    notes: list[str],
) -> None:
    """The checks of the module docstring on the endpoints x0, x1 [B, d] of pairs ``first_index ..``
    (cast to the generator's dtype and device); a note (nearly deterministic output) goes to ``notes``."""
    img0 = _probe(op, x0, first_index, monitor)
    img1 = _probe(op, x1, first_index, monitor)
    with torch.no_grad():
        again = op.gen(x0)
    n = PROBE_POINTS
    note = check_determinism(
        img0,
        again,
        (img1.double() - img0.double()) / (n - 1),
        op.adapter.kind,
        step_name="a quarter of the path from z0 to z1",
        consequence=RANDOMNESS,
    )
    if note is not None and not any(n.startswith(_NOTE_START) for n in notes):  # one per run
        notes.append(note)
    B, d = x0.shape
    pairs = f"pairs {first_index}..{first_index + B - 1}"
    with torch.enable_grad():  # the solver's gradient is reverse mode: the output must carry one
        carries = op.F(x0.detach().requires_grad_(True)).requires_grad
    if not carries:
        raise GeneratorOutputError(
            f"{_NO_DERIVATIVE.format(kind=op.adapter.kind)} carries no gradient at the endpoints of {pairs} "
            f"(a detach, torch.no_grad or a NumPy round trip inside the generator or the distance's embed), "
            f"{_CONSEQUENCE}"
        )
    inner = interpolation_path(x0, x1, n, init)[:, 1:-1]  # [B, n - 2, d]
    direction = (x1 - x0).double()[:, None].expand_as(inner)
    T = op.jv(inner.reshape(-1, d).to(x0.dtype), direction.reshape(-1, 1, d).to(x0.dtype))
    T = T.reshape(B, -1)
    bad = nonfinite_rows(T, "geodesic: the derivative along the interpolation path", first_index, "pairs")
    if bad is not None:
        raise FloatingPointError(
            f"{bad} (the images are finite: the derivative of the generator or the distance is not, e.g. "
            "sqrt or log at 0, or it overflowed)"
        )
    if not bool(T.any()) and not torch.equal(img0, img1):
        raise GeneratorOutputError(
            f"{_NO_DERIVATIVE.format(kind=op.adapter.kind)} has a derivative along the interpolation path "
            f"that is exactly 0 at every probed point of {pairs} while the images at the endpoints differ "
            f"(rounding or quantisation inside the generator or the distance's embed), {_CONSEQUENCE}"
        )
