"""Reference Philox4x32-10 and Box-Muller normals on int64 / float64 tensors."""

from __future__ import annotations

import math

import torch

_M32 = 0xFFFFFFFF
_MUL = (0xD2511F53, 0xCD9E8D57)
_WEYL = (0x9E3779B9, 0xBB67AE85)


def _mulhilo(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of a * m for a in [0, 2^32) (int64 has no unsigned 64-bit product:
    split a into 16-bit halves so every partial product stays below 2^49)."""
    x = (a & 0xFFFF) * m
    y = (a >> 16) * m
    s = y + (x >> 16)
    return s >> 16, ((s & 0xFFFF) << 16) | (x & 0xFFFF)


def philox4x32_10(counters: torch.Tensor, seed: int) -> torch.Tensor:
    """Philox4x32-10 of int64 counters [N, 4] (uint32 words) with key (lo32(seed), hi32(seed))."""
    if counters.dim() != 2 or counters.shape[1] != 4:
        raise ValueError(f"counters: expected shape [N, 4], got {tuple(counters.shape)}")
    seed &= (1 << 64) - 1
    k0, k1 = seed & _M32, seed >> 32
    c0, c1, c2, c3 = (counters[:, i].to(torch.int64) & _M32 for i in range(4))
    for _ in range(10):
        hi0, lo0 = _mulhilo(c0, _MUL[0])
        hi1, lo1 = _mulhilo(c2, _MUL[1])
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + _WEYL[0]) & _M32
        k1 = (k1 + _WEYL[1]) & _M32
    return torch.stack([c0, c1, c2, c3], dim=1)


def _row_words(start: int, count: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo32, hi32) of the uint64 row indices start + i, i < count (wrapping at 2^64)."""
    start &= (1 << 64) - 1
    lo = (start & _M32) + torch.arange(count, dtype=torch.int64, device=device)
    hi = ((start >> 32) + (lo >> 32)) & _M32
    return lo & _M32, hi


def _blocks(seed: int, start: int, count: int, stream: int, pairs: int, device: torch.device) -> torch.Tensor:
    """Philox outputs [count, pairs, 4] for counters (pair, stream, row)."""
    lo, hi = _row_words(start, count, device)
    pair = torch.arange(pairs, dtype=torch.int64, device=device)
    ctr = torch.stack(
        torch.broadcast_tensors(
            pair[None, :], torch.full_like(pair[None, :], stream), lo[:, None], hi[:, None]
        ),
        dim=-1,
    )
    return philox4x32_10(ctr.reshape(-1, 4), seed).reshape(count, pairs, 4)


def _bits53(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a >> 5) << 26) | (b >> 6)


def _bits52(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a >> 6) << 26) | (b >> 6)


def philox_uniform53(
    seed: int, start: int, count: int, stream: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """U[0, 1) float64 from the first two words of block (pair 0, stream, row) of each row."""
    w = _blocks(seed, start, count, stream, 1, torch.device(device))[:, 0]
    return _bits53(w[:, 0], w[:, 1]).to(torch.float64) * 2.0**-53


def philox_normal(
    seed: int,
    start: int,
    count: int,
    dim: int,
    *,
    stream: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Box-Muller normals: pair j of a row uses u1 = 1 - bits52(w0, w1) 2^-52 in (0, 1] and
    u2 = bits52(w2, w3) 2^-52 (the top 26 bits of each word); column 2j = r cos(2 pi u2),
    column 2j + 1 = r sin(2 pi u2), r = sqrt(-2 log u1)."""
    device = torch.device(device)
    pairs = (dim + 1) // 2
    w = _blocks(seed, start, count, stream, pairs, device)
    u1 = 1.0 - _bits52(w[..., 0], w[..., 1]).to(torch.float64) * 2.0**-52
    u2 = _bits52(w[..., 2], w[..., 3]).to(torch.float64) * 2.0**-52
    r = torch.sqrt(-2.0 * torch.log(u1))
    ang = 2.0 * math.pi * u2
    z = torch.stack([r * torch.cos(ang), r * torch.sin(ang)], dim=-1).reshape(count, 2 * pairs)[:, :dim]
    # Half types are rounded through float32, exactly as the kernels do.
    if dtype in (torch.float16, torch.bfloat16):
        return z.to(torch.float32).to(dtype)
    return z.to(dtype)
