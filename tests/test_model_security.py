"""External data of every tensor kind stays inside the model's folder, and is whole.

Real ONNX files with external data: a sparse initializer (onnxruntime would resolve its
location against the working directory if hepaudit did not read it first), a missing
file, and data shorter than the tensor. Each is refused with a message naming the tensor,
through ``load_model`` and the real ``hepaudit inspect``; inside the folder, the sparse
model is read and runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, external_data_helper, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))

from builders import dense_weights, mlp_model  # noqa: E402
from conftest import run_cli  # noqa: E402

from hepaudit.errors import ModelError  # noqa: E402
from hepaudit.model.graph import load_model  # noqa: E402

W = np.array([[1.5, 0.0], [0.0, -2.0], [0.0, 0.0], [0.5, 0.0]], np.float32)


def sparse_model(folder: Path, location: str, data_file: Path) -> Path:
    """y = sigmoid(x @ W) with W a sparse initializer whose values live in external data."""
    rows, cols = np.nonzero(W)
    values = numpy_helper.from_array(W[rows, cols], "W")
    indices = numpy_helper.from_array(np.stack([rows, cols], axis=1).astype(np.int64).reshape(-1, 2), "W_idx")
    data_file.parent.mkdir(parents=True, exist_ok=True)
    data_file.write_bytes(values.raw_data)
    external_data_helper.set_external_data(values, location, offset=0, length=len(values.raw_data))
    values.ClearField("raw_data")
    values.data_location = TensorProto.EXTERNAL
    sparse = helper.make_sparse_tensor(values, indices, list(W.shape))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["z"]), helper.make_node("Sigmoid", ["z"], ["score"])], "sparse",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 2])], sparse_initializer=[sparse])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "sparse.onnx"
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def test_sparse_initializer_inside_the_folder_is_read_and_runs(tmp_path: Path) -> None:
    path = sparse_model(tmp_path / "model", "w.bin", tmp_path / "model" / "w.bin")
    model = load_model(path)
    sparse = model.graph.sparse_initializer[0]
    assert not external_data_helper.uses_external_data(sparse.values)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(session.run(None, {"x": x})[0], 1 / (1 + np.exp(-(x @ W))), rtol=1e-5)


@pytest.mark.parametrize("location", ["../secret.bin", "/tmp/../etc/hostname", "sub/../../secret.bin"])
def test_sparse_initializer_outside_the_folder_is_refused(tmp_path: Path, location: str) -> None:
    path = sparse_model(tmp_path / "model", location, tmp_path / "secret.bin")
    with pytest.raises(ModelError, match="outside the model's folder"):
        load_model(path)
    result = run_cli("inspect", path, cwd=tmp_path / "model")  # the working directory is no way out either
    assert result.returncode == 2 and "outside the model's folder" in result.stderr
    assert "'W'" in result.stderr and "Traceback" not in result.stderr


def dense_external(folder: Path) -> Path:
    model = mlp_model(dense_weights([16, 8, 1], seed=1))
    path = folder / "ext.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.bin", size_threshold=0)
    return path


def test_missing_external_data_names_the_tensor(tmp_path: Path) -> None:
    path = dense_external(tmp_path)
    (tmp_path / "ext.bin").unlink()
    with pytest.raises(ModelError, match="'ext.bin' of tensor 'W0'.*file not found"):
        load_model(path)
    result = run_cli("inspect", path)
    assert result.returncode == 2 and "file not found" in result.stderr and "Traceback" not in result.stderr


def test_short_external_data_names_the_tensor(tmp_path: Path) -> None:
    path = dense_external(tmp_path)
    data = (tmp_path / "ext.bin").read_bytes()
    (tmp_path / "ext.bin").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelError, match="external data 'ext.bin' of tensor"):
        load_model(path)
    result = run_cli("inspect", path)
    assert result.returncode == 2 and "ext.bin" in result.stderr and "Traceback" not in result.stderr
