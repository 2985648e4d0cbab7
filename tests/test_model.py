"""The ONNX side: fixed batch dimensions, hidden tensors, inspect, init, external data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import dense_weights, mlp_forward, mlp_hidden, mlp_model, save
from conftest import FEATURES, AuditSetup, run_cli
from onnx import external_data_helper

from hepaudit.config import ModelConfig
from hepaudit.errors import ModelError
from hepaudit.model.graph import load_model
from hepaudit.model.session import Tagger


@pytest.mark.parametrize("style", ["gemm", "matmul"])
def test_fixed_batch_dimension_pads_the_last_batch(tmp_path: Path, style: str) -> None:
    weights = dense_weights([5, 7, 1], seed=2)
    save(mlp_model(weights, style, batch=7), tmp_path / "fixed.onnx")
    save(mlp_model(weights, style), tmp_path / "dynamic.onnx")
    x = np.random.default_rng(0).normal(size=(20, 5)).astype(np.float32)
    fixed = Tagger(ModelConfig(str(tmp_path / "fixed.onnx")))
    assert fixed.fixed_batch == 7
    dynamic = Tagger(ModelConfig(str(tmp_path / "dynamic.onnx"), batch_size=6))
    a, b = fixed.run({"x": x}), dynamic.run({"x": x})
    assert a.score.shape == (20,)
    np.testing.assert_allclose(a.score, b.score, rtol=1e-6)
    np.testing.assert_allclose(a.score, mlp_forward(weights, x)[:, 0], atol=1e-6)
    assert fixed.n_runs == 3  # 7 + 7 + 6 padded to 7


def test_expose_returns_hidden_relu_activations(tmp_path: Path) -> None:
    weights = dense_weights([6, 9, 4, 1], seed=3)
    save(mlp_model(weights, "matmul"), tmp_path / "m.onnx")
    tagger = Tagger(ModelConfig(str(tmp_path / "m.onnx")))
    tagger.expose(["h0", "h1"])
    x = np.random.default_rng(1).normal(size=(25, 6)).astype(np.float32)
    out = tagger.run({"x": x})
    h0, h1 = mlp_hidden(weights, x)
    np.testing.assert_allclose(out.extra["h0"], h0, atol=1e-5)
    np.testing.assert_allclose(out.extra["h1"], h1, atol=1e-5)
    assert (out.extra["h0"] == 0).any()  # ReLU did clip something
    with pytest.raises(ModelError, match="no tensor named 'h7'"):
        tagger.expose(["h7"])


@pytest.mark.parametrize("batch", [None, 7])
def test_batched_runs_write_every_row_of_hidden_outputs(tmp_path: Path, batch: int | None) -> None:
    """Chunks longer than a batch (onnxruntime writes later batches into preallocated rows),
    shorter ones, a second chunk (the learnt output layout) and a fixed-batch model whose last
    batch is padded all give the per-jet values of the numpy forward pass, row for row."""
    weights = dense_weights([6, 9, 4, 1], seed=5)
    save(mlp_model(weights, "gemm", batch=batch or "N"), tmp_path / "m.onnx")
    tagger = Tagger(ModelConfig(str(tmp_path / "m.onnx"), batch_size=batch or 8))
    tagger.expose(["h0", "h1"])
    rng = np.random.default_rng(4)
    for n in (30, 5, 16, 23):
        x = rng.normal(size=(n, 6)).astype(np.float32)
        out = tagger.run({"x": x})
        h0, h1 = mlp_hidden(weights, x)
        assert out.extra["h0"].shape == (n, 9) and out.extra["h1"].shape == (n, 4)
        np.testing.assert_allclose(out.extra["h0"], h0, atol=1e-5)
        np.testing.assert_allclose(out.extra["h1"], h1, atol=1e-5)
        np.testing.assert_allclose(out.score, mlp_forward(weights, x)[:, 0], atol=1e-6)
        # the same rows, each run alone, agree: no row is left unwritten or shifted
        for i in (0, n // 2, n - 1):
            alone = tagger.run({"x": np.repeat(x[i : i + 1], 1, axis=0)})
            np.testing.assert_allclose(alone.extra["h0"][0], out.extra["h0"][i], rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(alone.score[0], out.score[i], rtol=1e-6, atol=1e-9)
        plain = tagger.run({"x": x}, extra=False)
        assert plain.extra == {} and np.array_equal(plain.score, out.score)


@pytest.mark.parametrize("batch", [None, 7])
def test_scratch_runs_reuse_the_exposed_arrays(tmp_path: Path, batch: int | None) -> None:
    """``scratch`` runs give the values of ordinary runs, write the hidden tensors into the
    same memory chunk after chunk (the executor's contract: valid until the next scratch run),
    and leave the score fresh and ordinary runs' arrays alone."""
    weights = dense_weights([6, 9, 4, 1], seed=6)
    save(mlp_model(weights, "gemm", batch=batch or "N"), tmp_path / "m.onnx")
    tagger = Tagger(ModelConfig(str(tmp_path / "m.onnx"), batch_size=batch or 8))
    tagger.expose(["h0", "h1"])
    rng = np.random.default_rng(7)
    first = None
    for i, n in enumerate((30, 30, 12, 30)):
        x = rng.normal(size=(n, 6)).astype(np.float32)
        out = tagger.run({"x": x}, scratch=True)
        own = tagger.run({"x": x})
        h0, h1 = mlp_hidden(weights, x)
        np.testing.assert_allclose(out.extra["h0"], h0, atol=1e-5)
        np.testing.assert_allclose(out.extra["h1"], h1, atol=1e-5)
        np.testing.assert_array_equal(out.score, own.score)
        assert not np.shares_memory(own.extra["h0"], out.extra["h0"])
        if i == 0:  # the first run learns the output layout; its arrays are onnxruntime's own
            continue
        if first is None:
            first = out
            continue
        # later scratch runs write over the earlier one's hidden tensors ...
        assert np.shares_memory(first.extra["h0"], out.extra["h0"])
        # ... but never over its score
        assert not np.shares_memory(first.score, out.score)


def test_inspect_model_and_root_file(setup: AuditSetup) -> None:
    model = run_cli("inspect", setup.model)
    assert model.returncode == 0, model.stderr
    assert "x" in model.stdout and "score" in model.stdout and "Sigmoid" in model.stdout
    as_json = run_cli("inspect", setup.model, "--json")
    doc = json.loads(as_json.stdout)
    assert doc["inputs"][0]["name"] == "x" and doc["inputs"][0]["shape"][1] == len(FEATURES)
    data = run_cli("inspect", setup.data)
    assert data.returncode == 0, data.stderr
    for name in ("jets", "part_px", "is_signal", "f3", "400"):
        assert name in data.stdout, (name, data.stdout)
    missing = run_cli("inspect", setup.dir / "nothing.root")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr and "nothing.root" in missing.stderr


def test_init_writes_a_config_that_audit_accepts(setup: AuditSetup) -> None:
    save(mlp_model(dense_weights([30, 6, 1], seed=4)), setup.dir / "c.onnx")
    init = run_cli("init", "--model", setup.dir / "c.onnx", "--data", setup.data, cwd=setup.dir)
    assert init.returncode == 0, init.stderr  # printed: paths relative to the current folder
    config = setup.dir / "starter.toml"
    config.write_text(init.stdout)
    assert 'kind = "constituents"' in init.stdout and "max_particles = 10" in init.stdout
    result = run_cli("audit", config, "--out", setup.dir / "out", "-q", cwd=setup.dir)
    assert result.returncode == 0, result.stderr
    report = json.loads((setup.dir / "out" / "report.json").read_text())
    assert report["data"]["n_jets"] == 400
    assert report["features"][:3] == ["pt_0", "eta_0", "phi_0"]


def test_init_out_writes_paths_from_the_configs_folder(setup: AuditSetup, tmp_path: Path) -> None:
    """Model, data and config in three different folders, run from a fourth: the written config
    finds both, and the audit runs; an existing file is kept unless --force."""
    models, configs, elsewhere = tmp_path / "models", tmp_path / "configs" / "deep", tmp_path / "run"
    models.mkdir()
    elsewhere.mkdir()
    save(mlp_model(dense_weights([30, 6, 1], seed=4)), models / "c.onnx")
    target = configs / "audit.toml"
    init = run_cli("init", "--model", models / "c.onnx", "--data", setup.data, "--out", target, cwd=elsewhere)
    assert init.returncode == 0, init.stderr
    assert init.stdout == "" and f"wrote {target}" in init.stderr
    text = target.read_text()
    assert 'path = "../../models/c.onnx"' in text and str(configs) in text  # says where paths start
    result = run_cli("audit", target, "--out", tmp_path / "out", "-q", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "out" / "report.json").read_text())["data"]["n_jets"] == 400
    again = run_cli("init", "--model", models / "c.onnx", "--data", setup.data, "--out", target)
    assert again.returncode == 2 and "--force" in again.stderr and target.read_text() == text
    assert run_cli("init", "--model", models / "c.onnx", "--data", setup.data, "--out", target,
                   "--force").returncode == 0


def _external_model(folder: Path) -> Path:
    weights = dense_weights([64, 64, 1], seed=5)  # big enough to be stored externally
    model = mlp_model(weights)
    path = folder / "ext.onnx"
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="ext.bin",
        size_threshold=0,
    )
    return path


def test_external_data_inside_the_folder_loads(tmp_path: Path) -> None:
    path = _external_model(tmp_path)
    assert (tmp_path / "ext.bin").exists()
    model = load_model(path)
    assert not any(external_data_helper.uses_external_data(t) for t in model.graph.initializer)


@pytest.mark.parametrize("location", ["../evil.bin", "/etc/passwd", "sub/../../evil.bin"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path: Path, location: str) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    path = _external_model(folder)
    (tmp_path / "evil.bin").write_bytes((folder / "ext.bin").read_bytes())
    model = onnx.load(str(path), load_external_data=False)
    for tensor in external_data_helper._get_all_tensors(model):
        if external_data_helper.uses_external_data(tensor):
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
    onnx.save_model(model, str(path))
    with pytest.raises(ModelError, match="outside the model's folder"):
        load_model(path)
    result = run_cli("inspect", path)
    assert result.returncode == 2 and "outside the model's folder" in result.stderr
    assert "Traceback" not in result.stderr
