"""The random draws of the Vu–Wei–Wan notebooks, reproduced from a seeded legacy ``RandomState``.

A run of the ``vu2024`` protocol for seed ``s`` and scenario k is the notebooks' scenario loop after
``np.random.seed(s)``: their ``generate_Sigma_V`` draws the 10⁷ samples of all three scenarios (whichever it
returns), then every run of every (γ, λ) pair draws three initialisations ``(rand(m, n), make_spd_matrix(m))``
of which it uses the third (the first two only feed a display branch). Seeding before each scenario makes the
three scenarios share these draws, so one pass serves them all.

``np.random.RandomState.normal`` is the polar method: it consumes two doubles per attempt and accepts with
probability π/4, so the stream position after 10⁷ normals is only known by drawing them. Where the values are
not needed the stream is advanced by the acceptance test alone (same doubles, same test, no logarithms)."""

from __future__ import annotations

import numpy as np

__all__ = ["advance_normals", "init_draws", "make_spd_matrix", "normals_into", "sample_covariance"]

_CHUNK = 1 << 17


def advance_normals(rs: np.random.RandomState, size: int) -> None:
    """Advance ``rs`` exactly as ``rs.normal(size=size)`` does, without computing the normals (size even).

    Each attempt draws u1, u2 and accepts when ``r² = (2u1 − 1)² + (2u2 − 1)²`` is in (0, 1); an accepted
    attempt yields two normals.
    """
    if size % 2:
        raise ValueError(f"size: expected an even number of normals, got {size}")
    need = size // 2
    buf = np.empty(2 * min(need, _CHUNK))
    r2 = np.empty(min(need, _CHUNK))
    while need:
        k = min(need, _CHUNK)
        u = buf[: 2 * k]
        u[:] = rs.random_sample(2 * k)
        np.multiply(u, 2.0, out=u)
        np.subtract(u, 1.0, out=u)
        np.multiply(u, u, out=u)
        r = r2[:k]
        np.add(u[0::2], u[1::2], out=r)
        need -= int(np.count_nonzero(r < 1.0)) - int(np.count_nonzero(r == 0.0))


def normals_into(rs: np.random.RandomState, out: np.ndarray, scale: float) -> np.ndarray:
    """Fill ``out`` (1-d, even length) with ``rs.normal(0.0, scale, out.size)``, bitwise, in place.

    The same attempts and acceptance test as :func:`advance_normals`; an accepted pair (x1, x2) with ``f =
    sqrt(−2 log r² / r²)`` gives ``f·x2`` then ``f·x1``, scaled (``0 + scale·g`` = ``scale·g``). Writing in
    place spares the 80 MB temporary (and its page faults) of each of the notebooks' 10⁷-sample arrays."""
    n = out.size
    if n % 2:
        raise ValueError(f"out: expected an even number of normals, got {n}")
    pairs = out.reshape(-1, 2)
    done = 0
    while done < n // 2:
        k = min(n // 2 - done, _CHUNK)
        u = rs.random_sample(2 * k)
        u *= 2.0
        u -= 1.0
        x1, x2 = u[0::2], u[1::2]
        r2 = x1 * x1
        r2 += x2 * x2
        ok = (r2 < 1.0) & (r2 != 0.0)
        r2 = r2[ok]
        f = np.log(r2)
        f *= -2.0
        f /= r2
        np.sqrt(f, out=f)
        dst = pairs[done : done + r2.size]
        np.multiply(f, x2[ok], out=dst[:, 0])
        np.multiply(f, x1[ok], out=dst[:, 1])
        done += r2.size
    out *= scale
    return out


def sample_covariance(
    rs: np.random.RandomState,
    draws: list[tuple[int, float]],
    edges: list[tuple[int, int, float]],
    s: int,
    size: int,
    out: np.ndarray | None = None,
    values: set[int] | None = None,
    rows: list[int] | None = None,
) -> np.ndarray:
    """One scenario of the notebooks' ``generate_Sigma_V``: ``draws`` = (factor, std) in their drawing order
    (the roots' N(0, σ_v²), then the noises z_k ~ N(0, σ_z²) of the dependent factors), ``edges`` = (child,
    parent, coefficient) with ``v_child = coefficient · v_parent + z_child``; returns the unrounded ``np.cov``
    of the s rows (their algorithm: centre by the row means, X Xᵀ / (size − 1)) in a buffer ``out`` (s, size).

    ``values`` (default all) are the drawn arrays to compute, the others are only drawn past; ``rows``
    (default all) the factors whose covariances are wanted (built from computed arrays only): the other
    entries of the result are NaN."""
    V = np.empty((s, size)) if out is None else out
    values = {k for k, _ in draws} if values is None else values
    rows = list(range(s)) if rows is None else rows
    for k, std in draws:
        if k in values:
            normals_into(rs, V[k], std)
        else:
            advance_normals(rs, size)
    children = {c for c, _, _ in edges}
    done = {k for k, _ in draws if k not in children}
    pending = [e for e in edges if e[0] in values]
    while pending:  # parents first (the notebooks' scenarios are one level deep; this also serves chains)
        c, p, a = next(e for e in pending if e[1] in done)
        V[c] += a * V[p]  # = a·v_p + z_c (addition commutes exactly)
        done.add(c)
        pending.remove((c, p, a))
    scale = np.true_divide(1, size - 1)
    for i in rows:
        V[i] -= V[i].mean()
    cov = np.full((s, s), np.nan)
    for a, i in enumerate(rows):  # row by row: no copy of the 10⁷-sample rows
        for j in rows[a:]:
            cov[i, j] = cov[j, i] = np.dot(V[i], V[j]) * scale
    return cov


def make_spd_matrix(uniform_mm: np.ndarray, uniform_m: np.ndarray) -> np.ndarray:
    """scikit-learn's ``make_spd_matrix`` from its two uniform draws, batched: U, Vᵀ from the SVD of AᵀA and
    ``U (1 + diag(u)) Vᵀ``, where ``1.0 + np.diag(u)`` adds 1 to every entry (not only the diagonal)."""
    U, _, Vt = np.linalg.svd(np.swapaxes(uniform_mm, -1, -2) @ uniform_mm)
    m = uniform_m.shape[-1]
    D = 1.0 + uniform_m[..., :, None] * np.eye(m)
    return (U @ D) @ Vt


def init_draws(
    rs: np.random.RandomState, pairs: int, runs: int, m: int, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """The initialisations of ``pairs`` × ``runs`` runs: per run three (B ~ U[0, 1)^{m×n}, Σ_W =
    make_spd_matrix(m)) draws, the third used. Returns B0 (pairs, runs, m, n), W0 (pairs, runs, m, m)."""
    per = m * n + m * m + m
    u = rs.random_sample(pairs * runs * 3 * per).reshape(pairs, runs, 3, per)[:, :, 2]
    B0 = u[..., : m * n].reshape(pairs, runs, m, n).copy()
    W0 = make_spd_matrix(u[..., m * n : m * n + m * m].reshape(pairs, runs, m, m), u[..., m * n + m * m :])
    return B0, W0
