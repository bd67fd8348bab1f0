"""GAN-Geometry's published ways of getting the metric's spectrum (Wang & Ponce, ICLR 2021, "The geometry of
deep generative image models and its applications"), written from the paper's description.

The Hessian of ``z' -> d(G(z), G(z'))`` at ``z' = z`` (``d`` = LPIPS; equal to 2 M, SPEC 2) is obtained by
second-order autograd through the distance:

- ``hessian_backward_iter``: the exact Hessian, one row per double-backward pass
  (``grad(grad(d)[i], z')``), d sequential passes over the retained graph;
- ``lanczos_top_k``: ARPACK Lanczos (``scipy.sparse.linalg.eigsh``) on a ``LinearOperator`` whose mat-vec
  is one double-backward Hessian-vector product ``grad(<grad(d), v>, z')``.

``dist`` must be twice differentiable by autograd (tangentlens' LPIPS with ``impl="reference"``, or the
lpips package): a native op whose backward is not itself differentiable gives a zero Hessian.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh


def _gradient(G: Callable, dist: Callable, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = z.detach().reshape(1, -1)
    with torch.no_grad():
        ref = G(z)
    zp = z.clone().requires_grad_(True)
    d = dist(ref, G(zp)).sum()
    (grad,) = torch.autograd.grad(d, zp, create_graph=True)
    return zp, grad.reshape(-1)


def hessian_backward_iter(G: Callable, dist: Callable, z: torch.Tensor) -> torch.Tensor:
    """The d×d Hessian at one point z [d] (or [1, d]) by d double-backward passes (float64 result)."""
    zp, grad = _gradient(G, dist, z)
    rows = []
    for i in range(grad.numel()):
        (h,) = torch.autograd.grad(grad[i], zp, retain_graph=True)
        rows.append(h.reshape(-1).double())
    H = torch.stack(rows)
    return 0.5 * (H + H.T)


def lanczos_top_k(
    G: Callable, dist: Callable, z: torch.Tensor, k: int, tol: float = 1e-4
) -> tuple[np.ndarray, np.ndarray, int]:
    """Top-k eigenpairs of the Hessian (descending) by ARPACK with double-backward HVPs; also the number of
    Hessian-vector products spent."""
    zp, grad = _gradient(G, dist, z)
    n = grad.numel()
    calls = 0

    def hvp(v: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        vt = torch.as_tensor(np.asarray(v).reshape(-1), dtype=grad.dtype)
        (h,) = torch.autograd.grad(grad @ vt, zp, retain_graph=True)
        return h.reshape(-1).double().numpy()

    op = LinearOperator((n, n), matvec=hvp, dtype=np.float64)
    vals, vecs = eigsh(op, k=k, which="LA", tol=tol)
    order = np.argsort(vals)[::-1]
    return vals[order], vecs[:, order], calls
