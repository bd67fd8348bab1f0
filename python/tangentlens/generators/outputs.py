"""The generator boundary: what a generator returns is checked here, once, for every engine (PPL, spectra).

* :func:`call_generator`: a plain call whose failure says which latents it was given (z_dim named);
* :func:`check_images`: one tensor (not a tuple), one row per latent, a float (or, where no derivative is
  taken, uint8) dtype;
* :class:`RangeMonitor`: the images' values against the declared ``output_range``, one warning per run
  that says what was seen and what each fix would do (never an error: untrained generators overshoot);
* :func:`check_determinism`: the same latents twice give the same images (finite differences at
  eps = 1e-4 otherwise measure the generator's randomness).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from tangentlens._checks import nonfinite_rows

__all__ = [
    "TO_UNIT",
    "GeneratorOutputError",
    "GeneratorRangeWarning",
    "NondeterministicGeneratorError",
    "RangeMonitor",
    "call_generator",
    "check_determinism",
    "check_images",
    "check_finite_images",
]

# native output range -> [-1, 1]: x * a + b
TO_UNIT = {"-1_1": (1.0, 0.0), "0_1": (2.0, -1.0), "0_255": (1 / 127.5, -1.0)}
# a value farther than this from [-1, 1] (after the range conversion) is worth a warning: [0, 255] images
# declared as [-1, 1] reach 255, untrained StyleGAN2 networks about 16
RANGE_LIMIT = 16.0
# repeated calls may differ by this fraction of the finite-difference step (GPU atomics) and pass
DETERMINISM_TOLERANCE = 1e-3


class GeneratorOutputError(ValueError):
    """A generator returned something the engines cannot use (a tuple, the wrong number of rows, ...)."""


class NondeterministicGeneratorError(GeneratorOutputError):
    """The same latents gave different images: finite differences would measure the randomness."""


class GeneratorRangeWarning(UserWarning):
    """The images' values do not look like the declared ``output_range``."""


def call_generator(fn: Callable, x: torch.Tensor, kind: str, space: str, z_dim: int) -> object:
    """``fn(x)``; a failure inside the generator is re-raised saying what it was given, so that a wrong
    ``z_dim`` (or w shape, or dtype) is named instead of a bare shape error from deep inside it."""
    try:
        return fn(x)
    except GeneratorOutputError:
        raise  # the boundary's own check of what came back
    except Exception as exc:
        dtype = str(x.dtype).removeprefix("torch.")
        if space == "z":
            what = f"{dtype} latents of shape {tuple(x.shape)} (z_dim={z_dim})"
            hint = "; if its latent size is not z_dim pass z_dim=, if it needs another dtype pass dtype="
        else:
            what, hint = f"{dtype} w of shape {tuple(x.shape)}", ""
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise GeneratorOutputError(
            f"generator ({kind}): calling it on {what} failed with {type(exc).__name__}: {first}{hint}"
        ) from exc


def check_images(out: object, rows: int, kind: str, *, differentiable: bool) -> torch.Tensor:
    """The generator's output for ``rows`` latents: a tensor with one row per latent, float (uint8 too when
    no derivative is taken). Works on torch.func's wrapped tensors (shape and dtype only)."""
    if isinstance(out, (tuple, list)):
        parts = ", ".join(
            type(o).__name__ if not isinstance(o, torch.Tensor) else str(tuple(o.shape)) for o in out
        )
        raise GeneratorOutputError(
            f"generator output ({kind}): expected a tensor of images, got a {type(out).__name__} of "
            f"{len(out)} ({parts}); wrap the generator to return the images only, e.g. lambda z: G(z)[0]"
        )
    if not isinstance(out, torch.Tensor):
        raise GeneratorOutputError(
            f"generator output ({kind}): expected a tensor of images, got {type(out).__name__}"
        )
    if out.dim() == 0 or out.shape[0] != rows:
        got = "a scalar" if out.dim() == 0 else f"{out.shape[0]} rows (shape {tuple(out.shape)})"
        raise GeneratorOutputError(
            f"generator output ({kind}): expected one row per latent, {rows} rows, got {got}; row i must be "
            "the image of latent i"
        )
    if not out.is_floating_point():
        if out.dtype != torch.uint8 or differentiable:
            why = (
                "has no derivative (the rounding to 256 levels is flat almost everywhere), so the exact "
                "modes (ppl's method='jvp', spectra, geodesics) cannot apply: return the float images "
                "before the quantisation (declare their range with output_range=), or use ppl's "
                "method='fd' to reproduce a uint8 protocol"
                if out.dtype == torch.uint8
                else "is not an image dtype: return float images (or uint8 for finite differences)"
            )
            raise GeneratorOutputError(f"generator output ({kind}): {out.dtype} {why}")
    return out


def check_finite_images(
    x: torch.Tensor, first_index: int, what: str = "generator output", pairs: bool = False
) -> None:
    """Raise FloatingPointError naming NaN / inf and the samples (indices from ``first_index``). ``pairs``:
    x holds the two images of each sample, ``[x(p(t)); x(p(t + eps))]``."""
    if pairs and x.dim() > 0 and x.shape[0] % 2 == 0:
        x = x.reshape(2, x.shape[0] // 2, -1).transpose(0, 1)  # [n, 2, ...]: row i is sample i
    msg = nonfinite_rows(x, what, first_index, what="sample indices")
    if msg is not None:
        raise FloatingPointError(msg)


class RangeMonitor:
    """Compares the raw images of a run with its declared ``output_range`` and warns at most once.

    Checked: values far outside [-1, 1] after the range conversion (on the first ``BATCHES`` batches, so that
    a long run does not pay a device synchronisation per batch for it), and on the first batch the
    signatures of a wrong declaration: never negative under ``"-1_1"`` ([0, 1] or [0, 255] images), clearly
    negative under ``"0_1"`` / ``"0_255"``, everything within [-1, 1] under ``"0_255"``. uint8 images are
    unambiguous and not checked. The warning goes to ``notes`` too.
    """

    BATCHES = 8

    def __init__(self, output_range: str, enabled: bool = True, notes: list[str] | None = None) -> None:
        self.output_range = output_range
        self.enabled = enabled
        self.notes = notes if notes is not None else []
        self.first = True
        self.seen = 0

    def observe(self, raw: torch.Tensor, first_index: int) -> None:
        self.seen += 1
        if self.seen > self.BATCHES:
            self.enabled = False
        if not self.enabled or raw.numel() == 0 or not raw.is_floating_point():
            self.first = False
            return
        lo, hi = float(raw.detach().min()), float(raw.detach().max())
        if lo != lo or hi != hi:  # NaN: reported by the finiteness check
            return
        a, b = TO_UNIT[self.output_range]
        ulo, uhi = lo * a + b, hi * a + b
        r = repr(self.output_range)
        seen = f"values in [{lo:.4g}, {hi:.4g}] (samples {first_index}..{first_index + raw.shape[0] - 1})"
        keep = "; if the declaration is right, pass check_range=False to silence this"
        msg = None
        if max(abs(ulo), abs(uhi)) > RANGE_LIMIT:
            msg = (
                f"generator output: {seen} reach {max(abs(ulo), abs(uhi)):.4g} after mapping the declared "
                f"output_range={r} to [-1, 1]. If the images are in [0, 255], declare output_range='0_255' "
                "(this divides image differences by 127.5, distances by up to 127.5^2); an untrained or "
                f"unusual generator can legitimately produce such values{keep}"
            )
        elif self.first and self.output_range == "-1_1" and lo >= 0:
            likely = "0_255" if hi > 1.5 else "0_1"
            msg = (
                f"generator output: {seen}, never negative, under output_range='-1_1': these look like "
                f"images in [{likely.replace('_', ', ')}]. If so, declare output_range={likely!r} (this "
                f"changes the distances: the images are then rescaled to [-1, 1]){keep}"
            )
        elif self.first and self.output_range in ("0_1", "0_255") and lo < -0.5:
            msg = (
                f"generator output: {seen}, clearly negative, under output_range={r}: these look like images "
                f"in [-1, 1]. If so, declare output_range='-1_1' (this changes the distances){keep}"
            )
        elif self.first and self.output_range == "0_255" and hi <= 1.0:
            msg = (
                f"generator output: {seen}, all within [-1, 1], under output_range='0_255': these look like "
                "images in [0, 1] or [-1, 1]. If so, declare output_range='0_1' or '-1_1' (this changes the "
                f"distances by up to 127.5^2){keep}"
            )
        self.first = False
        if msg is not None:
            self.enabled = False  # one warning per run
            self.notes.append(msg)
            warnings.warn(msg, GeneratorRangeWarning, stacklevel=4)


# what a non-deterministic generator does to finite differences, and the fixes (check_determinism's default)
FD_RANDOMNESS = (
    "method='fd' would measure its randomness, not the path (PPL off by orders of magnitude). Make its "
    "forward deterministic (eval() for dropout, constant noise), or use method='jvp' (one pass per sample: "
    "noise added inside the forward has no tangent)"
)


def check_determinism(
    first: torch.Tensor,
    again: torch.Tensor,
    step: torch.Tensor,
    kind: str,
    *,
    step_name: str = "the finite-difference step",
    consequence: str = FD_RANDOMNESS,
) -> str | None:
    """``first`` and ``again``: images of the same latents from two calls; ``step``: per-sample image
    differences the engine measures (``step_name``; finite differences ``G(p(t + eps)) - G(p(t))`` by
    default). Bit-identical: None. A difference below ``DETERMINISM_TOLERANCE`` of the step (GPU atomics): a
    note. Larger: NondeterministicGeneratorError, saying what it would do (``consequence``)."""
    if first.shape != again.shape or torch.equal(first, again):
        return None
    gap = float((first.double() - again.double()).abs().max())
    size = float(step.double().flatten(1).abs().amax(1).median()) if step.numel() else 0.0
    if size > 0 and gap <= DETERMINISM_TOLERANCE * size:
        return (
            f"generator: two calls on the same latents differ by up to {gap:.3g} ({gap / size:.2g} of "
            f"{step_name}), e.g. non-deterministic GPU kernels; negligible for the distances"
        )
    raise NondeterministicGeneratorError(
        f"generator ({kind}): two calls on the same latents gave images that differ by up to {gap:.4g}, "
        f"{'more than' if size > 0 else 'while'} {step_name} changes them ({size:.4g}): {consequence}"
    )
