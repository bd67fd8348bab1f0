"""Perceptual geodesics: closed forms (linear generator, isometric sphere, warped plane), the energy's
gradient against finite differences and a float64 autograd reference, the Gauss-Newton blocks, invariances
(swap, batch composition), refinement, the scan (batch invariance, resume, JSON), the CLI, bad inputs."""

import functools
import json
import math
from pathlib import Path

import pytest
import torch

import tangentlens
from tangentlens import geodesics
from tangentlens._operator import _Operator
from tangentlens.geodesics import curves, optim
from tangentlens.models import StyleGAN2Generator

F64 = torch.float64


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _as_image(x):
    return x.reshape(x.shape[0], 1, 1, -1)


class _Linear(torch.nn.Module):
    def __init__(self, A):
        super().__init__()
        self.A = torch.nn.Parameter(A, requires_grad=False)
        self.z_dim = A.shape[1]

    def forward(self, z):
        return _as_image(z @ self.A.T)


class _Sphere(torch.nn.Module):
    """z -> R z / |z|: the radial projection onto the sphere of radius R (an isometry of each sphere
    |z| = R onto it): geodesics are great-circle arcs."""

    def __init__(self, R=2.0, d=3):
        super().__init__()
        self.R, self.z_dim = R, d
        self.register_buffer("dummy", torch.zeros(1, dtype=F64))

    def forward(self, z):
        return _as_image(self.R * z / z.norm(dim=1, keepdim=True))


class _WarpedPlane(torch.nn.Module):
    """z -> P ψ(z) with ψ(z) = z + 0.5 sin(z swapped) (a diffeomorphism of R²: a contraction away from
    the identity) and P an isometric embedding of R² into R^5: the metric is flat, the geodesic is the
    straight segment in image space whatever the latent warping."""

    def __init__(self):
        super().__init__()
        self.P = torch.nn.Parameter(torch.linalg.qr(_rand(5, 2, seed=3))[0], requires_grad=False)
        self.z_dim = 2

    def psi(self, z):
        return z + 0.5 * torch.sin(z.flip(1))

    def forward(self, z):
        return _as_image(self.psi(z) @ self.P.T)


class _MLP(torch.nn.Module):
    def __init__(self, d=4, side=6, seed=0, act=torch.nn.functional.softplus):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W1 = torch.nn.Parameter(torch.randn(24, d, generator=g, dtype=F64) / d**0.5, requires_grad=False)
        self.W2 = torch.nn.Parameter(
            torch.randn(side * side, 24, generator=g, dtype=F64) / 24**0.5, requires_grad=False
        )
        self.act, self.side, self.z_dim = act, side, d

    def forward(self, z):
        return torch.tanh(self.act(z @ self.W1.T) @ self.W2.T).reshape(-1, 1, self.side, self.side)


@functools.cache
def _tiny_stylegan(res=8):
    G = StyleGAN2Generator(z_dim=6, w_dim=6, img_resolution=res, channel_max=8, mapping_layers=2, seed=0)
    return G.double()


def _chord_arc(R, theta, n):
    """Length of n equally spaced points on an arc of angle theta: (n - 1) chords of 2 R sin(θ / 2(n-1))."""
    return (n - 1) * 2 * R * math.sin(theta / (2 * (n - 1)))


# ---- closed forms ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["lbfgs", "gauss-newton"])
def test_linear_generator_straight_segment(method):
    A = _rand(7, 4, seed=1)
    G = _Linear(A)
    z0, z1 = _rand(3, 4, seed=2), _rand(3, 4, seed=3)
    n = 9
    g = tangentlens.geodesic(G, z0, z1, distance="l2", points=n, init="slerp", method=method, tol=1e-11)
    t = torch.linspace(0, 1, n, dtype=F64)
    straight = z0[:, None] + t[None, :, None] * (z1 - z0)[:, None]
    torch.testing.assert_close(g.path, straight, rtol=0, atol=1e-6)
    want = ((z1 - z0) @ A.T).norm(dim=1)
    torch.testing.assert_close(g.length, want, rtol=1e-10, atol=0)
    torch.testing.assert_close(g.energy, want.square(), rtol=1e-9, atol=0)  # constant speed: E = L²
    assert g.converged.all() and (g.efficiency < 1).all()  # the slerp path is longer
    # from the straight segment itself: nothing to gain, efficiency exactly 1
    lin = tangentlens.geodesic(G, z0, z1, distance="l2", points=n, init="lerp", method=method, refine=False)
    assert lin.no_shortcut.all() and torch.equal(lin.efficiency, torch.ones(3, dtype=F64))
    torch.testing.assert_close(lin.interp_length, want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("constrain", ["none", "sphere"])
def test_isometric_sphere_great_circle(constrain):
    R, n = 2.0, 11
    G = _Sphere(R)
    z0 = torch.tensor([[1.0, 0.2, -0.3], [0.0, 1.0, 0.5]], dtype=F64) * 1.7
    z1 = torch.tensor([[-0.4, 1.0, 0.6], [0.8, -0.9, 0.1]], dtype=F64) * 1.7
    g = tangentlens.geodesic(G, z0, z1, distance="l2", points=n, constrain=constrain, tol=1e-12, refine=False)
    u0, u1 = z0 / z0.norm(dim=1, keepdim=True), z1 / z1.norm(dim=1, keepdim=True)
    theta = torch.arccos((u0 * u1).sum(1))
    want = torch.tensor([_chord_arc(R, float(th), n) for th in theta], dtype=F64)
    torch.testing.assert_close(g.length, want, rtol=1e-9, atol=0)
    # the images are equally spaced on the great circle: p_i = slerp(u0, u1, t_i) R
    t = torch.linspace(0, 1, n, dtype=F64)
    arc = tangentlens.paths.slerp(
        u0[:, None].expand(-1, n, -1), u1[:, None].expand(-1, n, -1), t.expand(2, n)
    )
    imgs = R * g.path / g.path.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(imgs, R * arc, rtol=0, atol=1e-6)
    if constrain == "sphere":  # each point on its sphere |c_i| = (1 - t) |z0| + t |z1|
        radii = (1 - t)[None] * z0.norm(dim=1)[:, None] + t[None] * z1.norm(dim=1)[:, None]
        torch.testing.assert_close(g.path.norm(dim=-1), radii, rtol=1e-12, atol=0)


def test_warped_plane_is_straight_in_image_space():
    G = _WarpedPlane()
    z0 = torch.tensor([[-1.5, 0.3], [0.4, -1.0]], dtype=F64)
    z1 = torch.tensor([[1.2, 1.1], [-0.9, 1.6]], dtype=F64)
    n = 9
    g = tangentlens.geodesic(G, z0, z1, distance="l2", points=n, tol=1e-13, refine=False)
    x0, x1 = G(z0).flatten(1), G(z1).flatten(1)
    torch.testing.assert_close(g.length, (x1 - x0).norm(dim=1), rtol=1e-9, atol=0)
    t = torch.linspace(0, 1, n, dtype=F64)
    imgs = G(g.path.reshape(-1, 2)).reshape(2, n, -1)
    torch.testing.assert_close(imgs, x0[:, None] + t[None, :, None] * (x1 - x0)[:, None], rtol=0, atol=1e-6)
    # the latent path is curved (ψ is not linear), and the lerp in z is longer in image space
    straight = z0[:, None] + t[None, :, None] * (z1 - z0)[:, None]
    assert (g.path - straight).abs().max() > 0.05
    assert (g.interp_length > g.length * (1 + 1e-4)).all() and (g.efficiency < 1).all()


# ---- the energy and its gradient ------------------------------------------------------------------------


def _reference_energy(G, z0, z1, c):
    """E = (n - 1) Σ |G(c_{i+1}) - G(c_i)|², straightforward float64 autograd."""
    full = torch.cat([z0[:, None], c, z1[:, None]], dim=1)
    b, n, d = full.shape
    x = G(full.reshape(b * n, d)).reshape(b, n, -1)
    return (n - 1) * (x[:, 1:] - x[:, :-1]).square().sum((1, 2))


def test_energy_gradient_against_fd_and_float64_autograd():
    G64 = _MLP(d=4)
    G32 = _MLP(d=4).float()
    z0, z1 = _rand(2, 4, seed=4), _rand(2, 4, seed=5)
    n = 6
    c = curves.interpolation_path(z0, z1, n, "lerp")[:, 1:-1] + 0.3 * _rand(2, n - 2, 4, seed=6)
    idx = torch.arange(2)
    # float64: our E and gradient against autograd through the straightforward energy
    prob = optim.Problem(_Operator(G64, "l2", "z", "fp32", None), z0, z1, n, curves.Shell(None))
    E, seg, g = prob.evaluate(idx, c, grad=True)
    cr = c.clone().requires_grad_(True)
    Er = _reference_energy(G64, z0, z1, cr)
    (gr,) = torch.autograd.grad(Er.sum(), cr)
    torch.testing.assert_close(E, Er.detach(), rtol=1e-13, atol=0)
    torch.testing.assert_close(g, gr, rtol=1e-11, atol=1e-11)
    # central differences of our energy (float64)
    h = 1e-6
    for b, j, k in [(0, 0, 0), (1, 3, 2), (0, 2, 1)]:
        e = torch.zeros_like(c)
        e[b, j, k] = h
        fd = (prob.evaluate(idx, c + e, False)[0] - prob.evaluate(idx, c - e, False)[0])[b] / (2 * h)
        assert abs(float(fd) - float(g[b, j, k])) <= 1e-6 * max(1.0, abs(float(g[b, j, k])))
    # float32 generator: the gradient matches the float64 reference to float32 accuracy
    prob32 = optim.Problem(
        _Operator(G32, "l2", "z", "fp32", None), z0.float(), z1.float(), n, curves.Shell(None)
    )
    _, _, g32 = prob32.evaluate(idx, c, grad=True)
    torch.testing.assert_close(g32, gr, rtol=1e-4, atol=1e-4 * gr.abs().max().item())


def test_lpips_energy_is_the_sum_of_lpips_distances():
    G = _tiny_stylegan(16)
    lp = tangentlens.LPIPS("vgg16", pretrained=False).double()
    z0, z1 = _rand(2, 6, seed=7), _rand(2, 6, seed=8)
    n = 4
    c = curves.interpolation_path(z0, z1, n, "slerp")
    prob = optim.Problem(_Operator(G, lp, "z", "fp32", None), z0, z1, n, curves.Shell(None))
    E, seg, g = prob.evaluate(torch.arange(2), c[:, 1:-1], grad=True)
    imgs = G(c.reshape(-1, 6), None, noise_mode="const").reshape(2, n, 3, 16, 16)
    d = torch.stack([lp(imgs[:, i], imgs[:, i + 1]) for i in range(n - 1)], dim=1)
    torch.testing.assert_close(seg, d, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(E, (n - 1) * d.sum(1), rtol=1e-10, atol=0)
    # its gradient: central differences along one coordinate
    h = 1e-5
    e = torch.zeros_like(c[:, 1:-1])
    e[1, 0, 3] = h
    fd = (
        prob.evaluate(torch.arange(2), c[:, 1:-1] + e, False)[0]
        - prob.evaluate(torch.arange(2), c[:, 1:-1] - e, False)[0]
    )[1] / (2 * h)
    assert abs(float(fd) - float(g[1, 0, 3])) <= 1e-5 * max(1.0, abs(float(g[1, 0, 3])))


@pytest.mark.parametrize("constrain", ["none", "sphere"])
def test_gauss_newton_blocks_against_autograd(constrain):
    G = _MLP(d=3, side=3)
    z0, z1 = _rand(2, 3, seed=9), _rand(2, 3, seed=10)
    n, m, d = 6, 4, 3
    shell = curves.Shell.for_endpoints(z0, z1, n, constrain)
    prob = optim.Problem(_Operator(G, "l2", "z", "fp32", None), z0, z1, n, shell)
    u = shell.project(curves.interpolation_path(z0, z1, n, "lerp")[:, 1:-1] + 0.2 * _rand(2, m, d, seed=11))
    idx = torch.arange(2)
    E, _, g = prob.evaluate(idx, u, grad=True)
    E2, _, g2, A, Up = optim._gn_system(prob, idx, u)
    torch.testing.assert_close(E2, E, rtol=1e-13, atol=0)
    torch.testing.assert_close(g2, g, rtol=1e-10, atol=1e-10)
    for b in range(2):
        sb = shell.subset(torch.tensor([b]))

        def resid(uu, b=b, sb=sb):
            x = G(torch.cat([z0[b : b + 1], sb.points(uu.reshape(1, m, d))[0], z1[b : b + 1]])).flatten(1)
            return ((n - 1) ** 0.5 * (x[1:] - x[:-1])).reshape(-1)

        Jr = torch.autograd.functional.jacobian(resid, u[b].reshape(-1))
        H = 2 * Jr.T @ Jr
        Hd = torch.block_diag(*A[b])
        for j in range(m - 1):
            Hd[j * d : (j + 1) * d, (j + 1) * d : (j + 2) * d] = Up[b, j]
            Hd[(j + 1) * d : (j + 2) * d, j * d : (j + 1) * d] = Up[b, j].T
        P = torch.eye(m * d, dtype=F64)
        if constrain == "sphere":  # on the tangent spaces (the radial direction is given unit curvature)
            uh = u[b] / u[b].norm(dim=-1, keepdim=True)
            P = torch.block_diag(*[torch.eye(d, dtype=F64) - torch.outer(v, v) for v in uh])
        torch.testing.assert_close(P @ Hd @ P, P @ H @ P, rtol=1e-10, atol=1e-10 * H.abs().max().item())
        rhs = _rand(1, m, d, seed=12 + b)
        x = optim._block_solve(A[b : b + 1], Up[b : b + 1], rhs)
        torch.testing.assert_close(Hd @ x.reshape(-1), rhs.reshape(-1), rtol=1e-9, atol=1e-9)
        p = _rand(1, m, d, seed=20 + b)
        if constrain == "sphere":
            p = (P @ p.reshape(-1)).reshape(1, m, d)
        torch.testing.assert_close(
            prob.curvature(torch.tensor([b]), u[b : b + 1], p), optim._quad(A[b : b + 1], Up[b : b + 1], p)
        )


# ---- invariances and refinement ---------------------------------------------------------------------------


def test_swap_reverses_and_batch_composition_does_not_matter():
    G = _MLP(d=4)
    z0, z1 = _rand(3, 4, seed=13), _rand(3, 4, seed=14)
    kw = dict(distance="l2", points=8, tol=1e-10, refine=False)
    g = tangentlens.geodesic(G, z0, z1, **kw)
    back = tangentlens.geodesic(G, z1, z0, **kw)
    torch.testing.assert_close(back.path, g.path.flip(1), rtol=0, atol=1e-6)
    torch.testing.assert_close(back.length, g.length, rtol=1e-9, atol=0)
    one = tangentlens.geodesic(G, z0[1:2], z1[1:2], **kw)
    split = tangentlens.geodesic(G, z0, z1, batch_size=2, **kw)
    torch.testing.assert_close(one.path[0], g.path[1], rtol=0, atol=1e-9)
    torch.testing.assert_close(split.path, g.path, rtol=0, atol=1e-9)
    assert torch.equal(split.iterations, g.iterations)


def test_refinement_and_result_fields():
    G = _Sphere(1.0)
    z0, z1 = torch.tensor([[1.0, 0.0, 0.0]], dtype=F64), torch.tensor([[0.0, 0.0, 1.0]], dtype=F64)
    g = tangentlens.geodesic(G, z0, z1, distance="l2", points=5, tol=1e-12)
    # chords of a quarter circle: the length grows towards π/2 from below as the points double
    assert g.length_fine is not None and g.length_change is not None
    torch.testing.assert_close(
        g.length, torch.tensor([_chord_arc(1, math.pi / 2, 5)], dtype=F64), rtol=1e-9, atol=0
    )
    torch.testing.assert_close(
        g.length_fine, torch.tensor([_chord_arc(1, math.pi / 2, 9)], dtype=F64), rtol=1e-9, atol=0
    )
    assert 0 < float(g.length_change[0]) < 0.01
    assert g.path.shape == (1, 5, 3) and g.speeds.shape == (1, 4) and g.status_names() == ["converged"]
    torch.testing.assert_close(g.speeds, torch.full((1, 4), float(g.length[0]), dtype=F64), rtol=1e-7, atol=0)
    assert g.config["points"] == 5 and g.config["method"] == "lbfgs" and "Geodesic: 1 pairs" in str(g)


def test_images_plot_and_json(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    G = _tiny_stylegan()
    z0, z1 = _rand(2, 6, seed=15), _rand(2, 6, seed=16)
    g = tangentlens.geodesic(G, z0, z1, distance="l2", points=5, max_iters=2, refine=False)
    imgs = g.images()
    assert imgs.shape == (2, 5, 3, 8, 8)
    torch.testing.assert_close(imgs[:, 0], G(z0, None, noise_mode="const"), rtol=1e-12, atol=1e-12)
    assert g.images("interpolation", pair=1).shape == (5, 3, 8, 8)
    fig = g.plot(1, columns=4)
    fig.savefig(tmp_path / "g.png")
    back = tangentlens.Geodesic.from_json(g.to_json())
    for name in ("path", "length", "interp_length", "status", "speeds"):
        assert torch.equal(getattr(back, name), getattr(g, name)), name
    assert back.config == json.loads(json.dumps(g.config))
    with pytest.raises(ValueError, match="pass generator="):
        back.images()
    torch.testing.assert_close(back.images(generator=G), imgs)


# ---- the scan ----------------------------------------------------------------------------------------------


@functools.cache
def _mlp4():
    return _MLP(d=4)


def _scan(generator=None, num_pairs=5, **kw):
    args = dict(distance="l2", points=5, max_iters=30, batch_size=2, progress=False, tol=1e-6)
    args.update(kw)
    return geodesics.scan(generator or _mlp4(), num_pairs, seed=3, **args)


def test_scan_pairs_batch_invariance_and_json(tmp_path):
    a, b = _scan(), _scan(batch_size=3)
    for k in a.rows:
        torch.testing.assert_close(a.rows[k], b.rows[k], rtol=1e-9, atol=1e-12, msg=k)
    # pair i: z0, z1 from the counter streams STREAM_Z0 / STREAM_Z1 at index i
    z0 = tangentlens.ops.philox_normal(3, 0, 5, 4, stream=geodesics.STREAM_Z0, dtype=F64)
    z1 = tangentlens.ops.philox_normal(3, 0, 5, 4, stream=geodesics.STREAM_Z1, dtype=F64)
    g = tangentlens.geodesic(_mlp4(), z0, z1, distance="l2", points=5, max_iters=30, tol=1e-6)
    torch.testing.assert_close(a.rows["length"], g.length, rtol=1e-9, atol=0)
    torch.testing.assert_close(a.efficiency, g.efficiency, rtol=1e-9, atol=0)
    agg = a.aggregate(bootstrap=200)
    e = agg["efficiency"]
    assert e["ci_low"] <= e["mean"] <= e["ci_high"] <= 1.0 and sum(e["histogram"]["counts"]) == 5
    assert {"efficiency_fine", "length_change_max", "converged", "interp_excess_mean"} <= set(agg)
    back = geodesics.GeodesicScan.from_json(a.to_json())
    assert all(torch.equal(back.rows[k], v) for k, v in a.rows.items())
    assert "geodesic efficiency" in str(a)


def test_scan_w_space_and_paths():
    G = _tiny_stylegan()
    with pytest.warns(RuntimeWarning, match="stopped at max_iters before the tolerance"):
        res = _scan(G, space="w", store_paths=True, refine=False, max_iters=3, points=4)
    z0 = tangentlens.ops.philox_normal(3, 0, 5, 6, stream=geodesics.STREAM_Z0, dtype=F64)
    w0 = G.mapping(z0, None)[:, 0]
    torch.testing.assert_close(res.rows["path"][:, 0], w0, rtol=0, atol=0)
    assert res.rows["path"].shape == (5, 4, 6) and "length_fine" not in res.rows


def test_scan_resume(tmp_path):
    ckpt = tmp_path / "geo.pt"
    full = _scan()
    first = _scan(checkpoint=ckpt, num_pairs=2)
    assert first.num_pairs == 2
    resumed = _scan(checkpoint=ckpt)
    assert resumed.resumed_from == 2
    for k, v in full.rows.items():  # the same batches: bit-identical
        assert torch.equal(resumed.rows[k], v), k
    with pytest.raises(ValueError, match="another configuration"):
        _scan(checkpoint=ckpt, points=6)


def _scan_worker(rank, world, init, out):
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.save(_scan().rows, f"{out}.{rank}")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_scan_distributed_equals_single_process(tmp_path):
    import torch.multiprocessing as mp

    init, out = f"file://{tmp_path / 'rdzv'}", str(tmp_path / "rows")
    mp.start_processes(_scan_worker, args=(2, init, out), nprocs=2, join=True, start_method="spawn")
    single = _scan().rows
    for r in (0, 1):
        rows = torch.load(f"{out}.{r}", weights_only=True)
        assert sorted(rows) == sorted(single)
        for k, v in single.items():  # ranks compute the same batches as one process: bit-identical
            assert torch.equal(rows[k], v), k


def test_cli_geodesic(tmp_path, capsys):
    from tangentlens import cli

    out = tmp_path / "g.json"
    args = ["geodesic", "--generator", "test_geodesics:_mlp4", "--pairs", "3", "--points", "5"]
    rc = cli.main([*args, "--distance", "l2", "--max-iters", "10", "--no-progress", "--json", str(out)])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["pairs"] == 3 and 0 < printed["efficiency"]["mean"] <= 1
    assert geodesics.GeodesicScan.from_json(out).num_pairs == 3
    assert cli.main(["geodesic", "--generator", "test_geodesics:_mlp4", "--pairs", "0"]) == 2
    assert "num_pairs: expected an int >= 1, got 0" in capsys.readouterr().err


def test_exported():
    assert tangentlens.geodesic is geodesics.geodesic and tangentlens.Geodesic is geodesics.Geodesic


# ---- errors -----------------------------------------------------------------------------------------------


def test_bad_inputs_name_the_argument():
    G = _Linear(_rand(5, 3))
    z = _rand(2, 3)
    cases = [
        (dict(points=2), ValueError, "points: expected an int >= 3, got 2"),
        (dict(init="cubic"), ValueError, "init: expected one of 'lerp', 'slerp'"),
        (dict(constrain="ball"), ValueError, "constrain: expected one of 'none', 'sphere'"),
        (dict(method="adam"), ValueError, "method: expected one of 'lbfgs', 'gauss-newton'"),
        (dict(tol=0), ValueError, "tol: expected a number in \\(0, 1\\), got 0"),
        (dict(max_iters=0), ValueError, "max_iters: expected an int >= 1"),
        (dict(refine=1), TypeError, "refine: expected True or False"),
        (dict(space="w"), ValueError, "space: 'w' needs a generator"),
    ]
    for kw, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            tangentlens.geodesic(G, z, z + 1, distance="l2", **kw)
    with pytest.raises(ValueError, match="z1: expected \\[B, 3\\]"):
        tangentlens.geodesic(G, z, _rand(2, 4), distance="l2")
    with pytest.raises(ValueError, match="z0: expected finite values, got NaN values at rows \\[0, 1\\]"):
        tangentlens.geodesic(G, z * math.nan, z, distance="l2")
    with pytest.raises(ValueError, match="constrain='sphere': expected non-zero endpoints"):
        tangentlens.geodesic(G, z * 0, z, distance="l2", constrain="sphere")


# ---- stochman's connecting_geodesic on the same decoders (golden fixtures) --------------------------------

STOCHMAN = Path(__file__).parent / "fixtures" / "stochman" / "geodesics.pt"


class _StochmanMLP(torch.nn.Module):
    """The MLP decoder of scripts/stochman_fixtures.py (weights from the fixture)."""

    def __init__(self, state):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = (
            torch.nn.Linear(4, 32),
            torch.nn.Linear(32, 32),
            torch.nn.Linear(32, 144),
        )
        self.double().load_state_dict(state)  # float64 first: the weights are float64
        self.requires_grad_(False)
        self.z_dim = 4

    def forward(self, z):
        sp = torch.nn.functional.softplus
        return torch.tanh(self.fc3(sp(self.fc2(sp(self.fc1(z)))))).reshape(-1, 1, 12, 12)


def _stochman_case(name):
    data = torch.load(STOCHMAN, weights_only=True)
    if name == "mlp":
        return _StochmanMLP(data["mlp_state"]), data[name]
    from tangentlens.models.vae import load_demo_vae

    return load_demo_vae(1).double().generator(channels=1), data[name]


@pytest.mark.parametrize("name", ["mlp", "vae_beta1"])
def test_stochman_energy_parity_and_lower_energy(name):
    G, ref = _stochman_case(name)
    z0, z1, n = ref["z0"], ref["z1"], ref["path"].shape[1]
    B = z0.shape[0]
    # the same discrete energy: ours on stochman's 20 points equals stochman's curve_energy
    prob = optim.Problem(_Operator(G, "l2", "z", "fp32", None), z0, z1, n, curves.Shell(None))
    torch.testing.assert_close(ref["path"][:, 0], z0, rtol=0, atol=1e-12)
    E, seg, _ = prob.evaluate(torch.arange(B), ref["path"][:, 1:-1], grad=False)
    torch.testing.assert_close(E, ref["energy"], rtol=1e-10, atol=0)
    torch.testing.assert_close(curves.length(seg), ref["length"], rtol=1e-10, atol=0)
    # from the straight line, as stochman starts: equal or lower final energy for every pair
    iters = 400 if name == "mlp" else 50
    g = tangentlens.geodesic(G, z0, z1, distance="l2", points=n, max_iters=iters, refine=False, tol=1e-8)
    torch.testing.assert_close(g.interp_energy, ref["line_energy"], rtol=1e-10, atol=0)
    assert (g.energy <= ref["energy"] * (1 + 1e-9)).all(), (g.energy, ref["energy"])
