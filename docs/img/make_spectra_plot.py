"""Regenerates docs/img/spectra.png: `python docs/img/make_spectra_plot.py` (a tiny model, about a minute)."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tangentlens import spectra  # noqa: E402
from tangentlens.models import StyleGAN2Generator  # noqa: E402

G = StyleGAN2Generator(z_dim=16, w_dim=16, img_resolution=16, channel_max=32, seed=0).double().eval()
res = spectra.scan(
    G, 32, seed=0, k=None, method="full", batch_size=8, store_eigenvectors=True, progress=False
)
fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
res.plot_eigenvalue_decay(axes[0], normalize=True)
axes[0].set_title("λ_i / λ_1 of M = JᵀJ, 32 points (pixels)", fontsize=9)
res.plot_alignment(axes[1])
axes[1].set_title("mean |V| (rows: z axes)", fontsize=9)
fig.tight_layout()
fig.savefig(os.path.join(os.path.dirname(os.path.abspath(__file__)), "spectra.png"), dpi=80)
