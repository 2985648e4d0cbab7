"""The NAP diagram: relative neural activity of every hidden node, one column per layer.

Each layer is a column split in two halves: the left half shows −RNA over background jets
(blue), the right half +RNA over signal jets (red), on one diverging colour map from −1 to
+1, so a node that fires for one class only is coloured on one side. Nodes run bottom to
top in their index order and every column spans the full height whatever its width, so
layers of 300 nodes and networks of 20 layers stay readable (the figure widens with the
number of layers). Below each column: its node count and its overall sparsity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hepaudit.report.figures import _png, _pyplot, _short


def nap_diagram(layers: Sequence[dict[str, Any]], threshold: float) -> bytes | None:
    """PNG of the NAP diagram from the ``layers`` rows of a nap result."""
    if not layers:
        return None
    plt = _pyplot()
    n = len(layers)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 + 0.62 * n), 6.2))
    cmap = plt.get_cmap("RdBu_r")
    image = None
    for k, layer in enumerate(layers):
        # negative RNA (signed activations) is drawn as 0: the colour side encodes the class
        sig = np.clip(np.asarray(layer["rna_signal"], dtype=float), 0.0, 1.0)
        bkg = np.clip(np.asarray(layer["rna_background"], dtype=float), 0.0, 1.0)
        x0 = k - 0.4
        kwargs = dict(aspect="auto", cmap=cmap, vmin=-1.0, vmax=1.0, origin="lower", interpolation="nearest")
        ax.imshow(-bkg[:, None], extent=(x0, k, 0.0, 1.0), **kwargs)
        image = ax.imshow(sig[:, None], extent=(k, k + 0.4, 0.0, 1.0), **kwargs)
        ax.plot([x0, k + 0.4, k + 0.4, x0, x0], [0, 0, 1, 1, 0], color="black", linewidth=0.5)
        ax.plot([k, k], [0, 1], color="black", linewidth=0.3)
        ax.text(k, -0.02, f"{layer['nodes']}\n{layer['sparsity']:.2f}", ha="center", va="top", fontsize=7)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylim(-0.1, 1.0)
    ax.set_xticks(
        range(n), [_short(str(layer["name"]), 22) for layer in layers], rotation=60, ha="right", fontsize=7
    )
    ax.tick_params(axis="x", pad=22, length=0)
    ax.set_yticks([0, 1], ["first node", "last node"], fontsize=7)
    ax.set_title(
        f"NAP diagram (nodes / overall sparsity, RNA < {threshold:g}, below each layer)", fontsize=10
    )
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.spines["left"].set_bounds(0.0, 1.0)
    if image is not None:
        bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
        bar.set_ticks([-1, -threshold, 0, threshold, 1])
        bar.set_ticklabels(["1 (bkg)", f"{threshold:g}", "0", f"{threshold:g}", "1 (sig)"])
        bar.ax.tick_params(labelsize=7)
        bar.set_label("RNA: background (left halves) | signal (right halves)", fontsize=8)
    return _png(fig)
