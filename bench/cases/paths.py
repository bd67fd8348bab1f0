"""Path sampling at scale: 1M samples x d = 512, slerp with tangent (SPEC 4).

ours:   tangentlens.paths.sample (counter-based normals + the slerp frame in one pass per chunk)
eager:  the best composition of eager torch ops we could write (torch.randn, in-place normalisation,
        acos, sin/cos, addcmul), the way PPL implementations do it today.
Both stream over the 1M samples in chunks (what a PPL run does) and produce the same tensors.

Floor: the job writes (p, p') = 2 x 4 B x 512 per sample (4.1 GB for 1M) in fp32. On a GPU the floor is
that many bytes at the measured device copy bandwidth; on a CPU the job is compute-bound (two Philox
blocks and one double-precision Box-Muller per element), so the floor column is the time to merely
write the bytes and says how far from memory-bound we are.
"""

from __future__ import annotations

import torch

import tangentlens
from bench.harness import Case


def eager_slerp_with_tangent(n: int, d: int, g: torch.Generator, device: torch.device, need_all: bool):
    z0 = torch.randn(n, d, generator=g, device=device)
    z1 = torch.randn(n, d, generator=g, device=device)
    t = torch.rand(n, 1, generator=g, device=device)
    a = z0 / torch.linalg.vector_norm(z0, dim=1, keepdim=True)
    b = z1 / torch.linalg.vector_norm(z1, dim=1, keepdim=True)
    dot = (a * b).sum(1, keepdim=True).clamp_(-1, 1)
    theta = torch.acos(dot)
    c = b.sub_(a * dot)
    c.div_(torch.linalg.vector_norm(c, dim=1, keepdim=True))
    ang = t * theta
    cos, sin = torch.cos(ang), torch.sin(ang)
    p = torch.addcmul(a * cos, c, sin)
    tangent = (c * cos).sub_(a * sin).mul_(theta)
    if not need_all:
        return p, tangent
    ang_e = ang + 1e-4 * theta
    p_eps = torch.addcmul(a * torch.cos(ang_e), c, torch.sin(ang_e))
    return z0, z1, t, p, p_eps, tangent


def _streamed(total: int, chunk: int, fn) -> None:  # noqa: ANN001
    for start in range(0, total, chunk):
        fn(start, min(chunk, total - start))


def cases(device: torch.device, quick: bool) -> list[Case]:
    total = 1 << 16 if quick else 1 << 20
    d = 512
    chunk = 16384 if device.type == "cpu" else total  # 1M x 512 fp32 fits a GPU in one go
    g = torch.Generator(device=device).manual_seed(0)
    bytes_pt = 2 * 4 * d
    bytes_all = 5 * 4 * d + 8

    def write_floor(nbytes_per_sample: int):
        buf = torch.empty(min(chunk, total) * nbytes_per_sample // 4, dtype=torch.float32, device=device)

        def run() -> float:
            from bench.harness import time_call

            return time_call(
                lambda: _streamed(total, chunk, lambda s, n: buf[: n * nbytes_per_sample // 4].fill_(1.0)),
                device,
            )

        return run

    def copy_floor(nbytes_per_sample: int):
        # Device copy bandwidth: read + write of the same number of output bytes, counted as written bytes.
        src = torch.empty(total * nbytes_per_sample // 4, dtype=torch.float32, device=device).fill_(1.0)
        dst = torch.empty_like(src)

        def run() -> float:
            from bench.harness import time_call

            return time_call(lambda: dst.copy_(src), device)

        return run

    floor = copy_floor if device.type == "cuda" else write_floor
    out = []
    for name, need_all, nbytes in [
        ("paths.slerp_tangent", False, bytes_pt),
        ("paths.slerp_all", True, bytes_all),
    ]:

        def ours(need_all: bool = need_all) -> None:
            _streamed(
                total,
                chunk,
                lambda s, n: tangentlens.paths.sample(
                    0, s, n, d, device=device, endpoints=need_all, step=need_all, tangent=True
                ),
            )

        def eager(need_all: bool = need_all) -> None:
            _streamed(total, chunk, lambda s, n: eager_slerp_with_tangent(n, d, g, device, need_all))

        out.append(
            Case(
                name=name,
                variants={"tangentlens": ours, "eager": eager},
                ours="tangentlens",
                baseline="eager",
                work=total,
                work_unit="samples",
                repeats=3 if quick else 5,
                meta={
                    "samples": total,
                    "dim": d,
                    "chunk": chunk,
                    "dtype": "float32",
                    "outputs": "z0, z1, t, p(t), p(t+eps), p'(t)" if need_all else "t, p(t), p'(t)",
                },
                floor_bytes=float(total * nbytes),
                floor_seconds=floor(nbytes),
            )
        )
    return out
