"""Figures of the inside-the-network explainers: the NAP diagram and the latent-space plots.

The NAP diagram shows the relative neural activity of every hidden node, one column per layer.

Each layer is a column split in two halves: the left half shows −RNA over background jets
(blue), the right half +RNA over signal jets (red), on one diverging colour map from −1 to
+1, so a node that fires for one class only is coloured on one side. Nodes run bottom to
top in their index order and every column spans the full height whatever its width, so
layers of 300 nodes and networks of 20 layers stay readable (the figure widens with the
number of layers). Below each column: its node count and its overall sparsity.

The latent-space figures show the leading principal components' distributions per class and
a heat map of their Pearson correlations with the jet observables.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from hepaudit.report.figures import _png, _pyplot, _short, fixed_margins

_GENERIC = re.compile(r"(\w*_)?(act|acts|activation|activations)([._]\d+)?", re.I)


def layer_label(name: str, op: str, index: int) -> str:
    """A short name for a hidden layer from its ONNX tensor name: the module that makes it, not
    the exporter's decoration ("/net/net.1/Relu_output_0" -> "net.1", "pf_conv1/Relu:0" ->
    "pf_conv1", "/pn/edge_convs.0/acts.1/Relu_output_0" -> "edge_convs.0/acts.1"); a bare
    number ("67") becomes the op and the layer's place ("Relu 3")."""
    text = re.sub(r"(_output_\d+|:\d+)$", "", name).removeprefix("onnx::")
    parts = [p for p in text.split("/") if p]
    while len(parts) > 1 and re.fullmatch(rf"{re.escape(op)}([._]\d+)?", parts[-1], re.I):
        parts.pop()  # the activation op's own node name adds nothing
    if not parts or parts[-1].isdigit() or re.fullmatch(rf"{re.escape(op)}([._]\d+)?", parts[-1], re.I):
        return f"{op} {index + 1}"
    if _GENERIC.fullmatch(parts[-1]) and len(parts) > 1:
        return f"{parts[-2]}/{parts[-1]}"
    return parts[-1]


def _layer_ticks(ax: Any, layers: Sequence[dict[str, Any]]) -> None:
    """Each column's readable name and width ("net.1 (300)"), level when they fit."""
    labels = [f"{_short(layer_label(str(r['name']), str(r.get('op', '')), k), 20)} ({r['nodes']})"
              for k, r in enumerate(layers)]
    level = max(len(t) for t in labels) <= 12
    ax.set_xticks(range(len(layers)), labels, rotation=0 if level else 30, ha="center" if level else "right",
                  fontsize=7)
    ax.tick_params(axis="x", pad=22, length=0)


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
    _layer_ticks(ax, layers)
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


def dnap_diagram(layers: Sequence[dict[str, Any]]) -> bytes | None:
    """PNG of the dNAP diagram: |RNA_sig − RNA_bkg| of every node, one column per layer — the
    nodes that tell the classes apart (the paper's difference diagram)."""
    if not layers:
        return None
    plt = _pyplot()
    n = len(layers)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 + 0.5 * n), 6.2))
    image = None
    for k, layer in enumerate(layers):
        diff = np.abs(np.asarray(layer["rna_signal"], float) - np.asarray(layer["rna_background"], float))
        image = ax.imshow(diff[:, None], extent=(k - 0.35, k + 0.35, 0.0, 1.0), aspect="auto", cmap="viridis",
                          vmin=0.0, vmax=1.0, origin="lower", interpolation="nearest")
        ax.text(k, -0.02, f"{layer['nodes']}\nmax {diff.max():.2f}", ha="center", va="top", fontsize=7)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylim(-0.1, 1.0)
    _layer_ticks(ax, layers)
    ax.set_yticks([0, 1], ["first node", "last node"], fontsize=7)
    ax.set_title("dNAP diagram: |RNA signal − RNA background| per node (nodes / largest, below)", fontsize=10)
    if image is not None:
        bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
        bar.set_label("|RNA_sig − RNA_bkg|", fontsize=8)
    return _png(fig)


def latent_figures(
    histograms: Sequence[dict[str, Any]],
    ratio: np.ndarray,
    components: Sequence[dict[str, Any]],
    observables: Sequence[str],
) -> list[tuple[str, str, bytes]]:
    """(file name, caption, PNG) for the component distributions and the correlation map."""
    from hepaudit.report.figures import BACKGROUND_COLOUR, SIGNAL_COLOUR

    plt = _pyplot()
    out = []
    k = len(histograms)
    # wide enough for the title above a single panel too: margins are fixed, not cropped to fit
    width, height = max(3.3 * k, 5.5), 3.0
    fig, axes = plt.subplots(1, k, figsize=(width, height), squeeze=False)
    for i, hist in enumerate(histograms):
        ax = axes[0, i]
        for colour, name in ((SIGNAL_COLOUR, "signal"), (BACKGROUND_COLOUR, "background")):
            if name in hist:
                ax.stairs(hist[name], hist["bin_edges"], color=colour, linewidth=1.4, label=name)
        ax.set_xlabel(f"PC{i} ({ratio[i]:.1%} of variance)", fontsize=8)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.set_ylabel("normalised jets", fontsize=8)
            ax.legend(fontsize=7, frameon=False)
    fig.suptitle("Leading principal components of the latent tensor, per class", fontsize=10)
    # fixed margins in inches (the panels are alike): a tight bounding box lays the row out twice
    fig.subplots_adjust(left=0.6 / width, right=1 - 0.15 / width, bottom=0.5 / height, top=1 - 0.4 / height,
                        wspace=0.3)
    out.append(
        (
            "latent_components.png",
            "Distributions of the leading principal components per class (a uniform sample of the jets)",
            _png(fig, tight=False),
        )
    )
    if observables:
        matrix = np.array(
            [
                [np.nan if c["pearson"].get(o) is None else c["pearson"][o] for o in observables]
                for c in components
            ],
            dtype=float,
        )
        fig, ax = plt.subplots(figsize=(1.6 + 0.75 * len(observables), 1.0 + 0.5 * len(components)))
        image = ax.imshow(np.ma.masked_invalid(matrix), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                text = "–" if np.isnan(matrix[i, j]) else f"{matrix[i, j]:+.2f}"
                colour = "white" if abs(np.nan_to_num(matrix[i, j])) > 0.6 else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)
        ax.set_xticks(
            range(len(observables)), [_short(o, 16) for o in observables], rotation=40, ha="right", fontsize=8
        )
        ax.set_yticks(range(len(components)), [f"PC{c['index']}" for c in components], fontsize=8)
        bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
        bar.set_label("Pearson r", fontsize=8)
        bar.ax.tick_params(labelsize=7)
        ax.set_title("Latent components vs jet observables", fontsize=10)
        out.append(
            (
                "latent_correlations.png",
                "Pearson correlation of the leading principal components with jet observables (all jets)",
                _png(fig, tight=not fixed_margins(fig, ax, bar.ax)),
            )
        )
    return out
