"""Golden outputs of stochman's connecting_geodesic for tests/fixtures/stochman (see its README).

Run where stochman is installed (``pip install torch==2.13.0 stochman``; tangentlens is not needed):
``python scripts/stochman_fixtures.py tests/fixtures/stochman/geodesics.pt``. Decoders: the demo VAE (β = 1,
architecture from this repository's models/vae.py) and a small softplus MLP, pixel distance, float64.
"""

import importlib.util
import json
import sys
import time
from pathlib import Path

import stochman
import torch
from stochman.manifold import EmbeddedManifold

MODELS = Path(__file__).resolve().parents[1] / "python" / "tangentlens" / "models"


def load_vae() -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("tl_vae", MODELS / "vae.py")
    assert spec is not None and spec.loader is not None
    vae_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vae_mod)
    cfg = json.loads((MODELS / "weights" / "vae_dsprites_beta1.json").read_text())["config"]["model"]
    vae = vae_mod.VAE(**cfg)
    vae.load_state_dict(torch.load(MODELS / "weights" / "vae_dsprites_beta1.pt", weights_only=True))
    return vae.eval().requires_grad_(False).double()


class MLPDecoder(torch.nn.Module):
    def __init__(self, d: int = 4, h: int = 32, side: int = 12) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = (
            torch.nn.Linear(d, h),
            torch.nn.Linear(h, h),
            torch.nn.Linear(h, side**2),
        )
        self.side = side

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        sp = torch.nn.functional.softplus
        return torch.tanh(self.fc3(sp(self.fc2(sp(self.fc1(z)))))).reshape(-1, 1, self.side, self.side)


class Decoded(EmbeddedManifold):
    """The decoder's output, flattened, as the embedding (pixel distance)."""

    def __init__(self, decode) -> None:  # noqa: ANN001
        self.decode = decode

    def embed(self, points: torch.Tensor, jacobian: bool = False) -> torch.Tensor:
        shape = points.shape
        out = self.decode(points.reshape(-1, shape[-1])).flatten(1)
        return out.reshape(*shape[:-1], out.shape[-1])


def run(name: str, decode, d: int, pairs: int, seed: int) -> dict[str, torch.Tensor]:  # noqa: ANN001
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(pairs, d, generator=g, dtype=torch.float64)
    z1 = torch.randn(pairs, d, generator=g, dtype=torch.float64)
    M = Decoded(decode)
    t = torch.linspace(0, 1, 20, dtype=torch.float64)
    out: dict[str, list] = {k: [] for k in ("path", "energy", "length", "line_energy", "success", "seconds")}
    for i in range(pairs):  # one pair at a time, as stochman's examples do
        torch.manual_seed(0)
        t0 = time.perf_counter()
        curve, ok = M.connecting_geodesic(z0[i : i + 1], z1[i : i + 1])
        out["seconds"].append(time.perf_counter() - t0)
        with torch.no_grad():
            pts = curve(t).reshape(1, 20, d)
            line = z0[i : i + 1, None] + t[None, :, None] * (z1 - z0)[i : i + 1, None]
            out["energy"].append(float(M.curve_energy(pts.clone(), reduction="none")[0]))
            out["length"].append(float(M.curve_length(pts.clone())[0]))
            out["line_energy"].append(float(M.curve_energy(line.clone(), reduction="none")[0]))
        out["path"].append(pts[0])
        out["success"].append(bool(ok))
        print(
            name,
            i,
            "energy",
            out["energy"][-1],
            "line",
            out["line_energy"][-1],
            f"{out['seconds'][-1]:.1f} s",
        )
    res = {"z0": z0, "z1": z1, "path": torch.stack(out["path"]), "success": torch.tensor(out["success"])}
    for k in ("energy", "length", "line_energy", "seconds"):
        res[k] = torch.tensor(out[k], dtype=torch.float64)
    return res


def main(path: str) -> None:
    torch.set_num_threads(1)
    out: dict = {"stochman_version": str(stochman.__version__), "torch": str(torch.__version__)}
    vae = load_vae()
    out["vae_beta1"] = run("vae", lambda z: vae.decode(z, 1), 10, 3, 1)
    torch.manual_seed(20)
    mlp = MLPDecoder().double()
    with torch.no_grad():
        for p in mlp.parameters():
            p.mul_(3.0)  # a curved decoder: geodesics well away from the straight line
    mlp = mlp.eval().requires_grad_(False)
    out["mlp"] = run("mlp", mlp, 4, 4, 2)
    out["mlp_state"] = {k: v.clone() for k, v in mlp.state_dict().items()}
    torch.save(out, path)
    print("wrote", path)


if __name__ == "__main__":
    main(sys.argv[1])
