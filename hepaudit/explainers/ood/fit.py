"""Fitting a fallback autoencoder on the reference sample and writing it as ONNX.

When the user gives no autoencoder, ``ood_ae`` fits one on the fit half of the reference:

- ``method = "pca"`` (the default, deterministic): the linear autoencoder. Inputs are
  standardised with the reference mean and standard deviation, the principal axes are the
  eigenvectors of their covariance (numpy ``eigh``), and the number of components is the
  smallest that explains ``variance`` (default 0.99) of the standardised variance.
  Encoder and decoder are the projection on those axes and back.
- ``method = "mlp"``: scikit-learn's ``MLPRegressor`` (one hidden bottleneck layer, ReLU),
  seeded and bounded by ``max_iter``; scikit-learn is optional and imported only then.

Either way the graph written (``onnx.helper``, opset 13) takes the raw flattened inputs
``x`` (N, D) and returns ``reconstruction`` (N, D) in the same raw units, with the
standardisation baked in (Sub, Div ... Mul, Add), so the file is a drop-in
``autoencoder = "ood_autoencoder.onnx"`` for later audits and can itself be inspected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hepaudit.lazy import lazy_module

if TYPE_CHECKING:
    import onnx
    from onnx import helper, numpy_helper
else:  # loaded on first use (hepaudit.lazy): registering plugins imports none of them
    onnx = lazy_module("onnx")
    helper = lazy_module("onnx.helper")
    numpy_helper = lazy_module("onnx.numpy_helper")

OPSET = 13


@dataclass
class Standardisation:
    """Reference mean and scale per input; constant inputs get scale 1 (their error stays in raw units)."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardisation:
        x = x.astype(np.float64)
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        tiny = 1e-8 * max(float(std.max(initial=0.0)), 1e-30)
        return cls(mean, np.where(std > tiny, std, 1.0))


@dataclass
class FittedAutoencoder:
    """A fitted fallback autoencoder: the ONNX graph and what describes it in the report."""

    model: onnx.ModelProto
    method: str
    description: dict[str, object]


def _linear_graph(
    layers: list[tuple[np.ndarray, np.ndarray | None, str | None]], standard: Standardisation, doc: str
) -> onnx.ModelProto:
    """x -> (x - mean) / scale -> layers -> * scale + mean; each layer (W (in, out), b, activation)."""
    d = len(standard.mean)
    inits = [
        numpy_helper.from_array(standard.mean.astype(np.float32), "mean"),
        numpy_helper.from_array(standard.scale.astype(np.float32), "scale"),
    ]
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "scale"], ["h_in"]),
    ]
    current = "h_in"
    for i, (w, b, act) in enumerate(layers):
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"W{i}"))
        nodes.append(helper.make_node("MatMul", [current, f"W{i}"], [f"mm{i}"]))
        current = f"mm{i}"
        if b is not None:
            inits.append(numpy_helper.from_array(b.astype(np.float32), f"b{i}"))
            nodes.append(helper.make_node("Add", [current, f"b{i}"], [f"lin{i}"]))
            current = f"lin{i}"
        if act == "relu":
            nodes.append(helper.make_node("Relu", [current], [f"relu{i}"]))
            current = f"relu{i}"
    nodes += [
        helper.make_node("Mul", [current, "scale"], ["rescaled"]),
        helper.make_node("Add", ["rescaled", "mean"], ["reconstruction"]),
    ]
    graph = helper.make_graph(
        nodes,
        "ood_autoencoder",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", d])],
        [helper.make_tensor_value_info("reconstruction", onnx.TensorProto.FLOAT, ["N", d])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hepaudit")
    model.doc_string = doc
    onnx.checker.check_model(model)
    return model


def fit_pca(
    x: np.ndarray, variance: float = 0.99, standard: Standardisation | None = None
) -> FittedAutoencoder:
    """The linear autoencoder keeping the fewest principal components explaining ``variance``."""
    standard = standard or Standardisation.fit(x)
    z = (x.astype(np.float64) - standard.mean) / standard.scale
    # Principal axes from the eigenvectors of Z^T Z (D x D): the same axes as the SVD of Z,
    # at a fraction of the cost for many jets and few inputs
    eigenvalues, vectors = np.linalg.eigh(z.T @ z)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, vectors = np.clip(eigenvalues[order], 0.0, None), vectors[:, order]
    explained = eigenvalues / max(float(np.sum(eigenvalues)), 1e-300)
    k = int(np.searchsorted(np.cumsum(explained), variance - 1e-12) + 1)
    k = min(max(k, 1), len(eigenvalues))
    axes = vectors[:, :k]  # (D, k)
    doc = (
        f"hepaudit ood_ae fallback: PCA with {k} of {x.shape[1]} components "
        f"({np.sum(explained[:k]):.4f} of the standardised variance), fitted on {len(x)} reference jets"
    )
    model = _linear_graph([(axes, None, None), (axes.T.copy(), None, None)], standard, doc)
    return FittedAutoencoder(
        model,
        "pca",
        {
            "method": "pca",
            "components": k,
            "inputs": int(x.shape[1]),
            "explained_variance": float(np.sum(explained[:k])),
            "fitted_jets": int(len(x)),
        },
    )


def fit_mlp(
    x: np.ndarray, hidden: int, seed: int, max_iter: int, standard: Standardisation | None = None
) -> FittedAutoencoder:
    """A one-bottleneck ReLU autoencoder fitted with scikit-learn's MLPRegressor (optional dependency)."""
    try:
        from sklearn.neural_network import MLPRegressor
    except ImportError:
        raise ImportError(
            'ood_ae method = "mlp" needs scikit-learn: pip install scikit-learn '
            '(or use the default method = "pca")'
        ) from None
    import warnings

    standard = standard or Standardisation.fit(x)
    z = ((x.astype(np.float64) - standard.mean) / standard.scale).astype(np.float32)
    net = MLPRegressor(
        hidden_layer_sizes=(hidden,),
        activation="relu",
        random_state=seed,
        max_iter=max_iter,
        early_stopping=True,
        validation_fraction=0.1,
    )
    with warnings.catch_warnings():  # hitting max_iter is the intended time bound, not a problem
        warnings.simplefilter("ignore")
        net.fit(z, z)
    (w0, w1), (b0, b1) = net.coefs_, net.intercepts_
    doc = (
        f"hepaudit ood_ae fallback: MLP autoencoder {x.shape[1]}-{hidden}-{x.shape[1]} (ReLU), "
        f"scikit-learn MLPRegressor, seed {seed}, {net.n_iter_} iterations, fitted on {len(x)} reference jets"
    )
    model = _linear_graph([(w0, b0, "relu"), (w1, b1, None)], standard, doc)
    return FittedAutoencoder(
        model,
        "mlp",
        {
            "method": "mlp",
            "hidden": hidden,
            "inputs": int(x.shape[1]),
            "iterations": int(net.n_iter_),
            "fitted_jets": int(len(x)),
            "seed": seed,
        },
    )
