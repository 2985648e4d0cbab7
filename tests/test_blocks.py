"""Block-parallel passes (hepaudit.model.blocks): every row once, same numbers on any threads,
errors raised, and the docs/plugins.md example run on a real ONNX model."""

from __future__ import annotations

import re
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from builders import dense_weights, mlp_forward, mlp_model, save  # noqa: E402

from hepaudit.config import ModelConfig  # noqa: E402
from hepaudit.model.blocks import block_starts, block_threads, for_blocks, shared_rows  # noqa: E402
from hepaudit.model.session import Tagger  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("threads", [1, 2, 5])
def test_every_row_once_in_its_block(threads: int) -> None:
    n, rows = 1003, 100
    seen = np.zeros(n, int)
    blocks: list[tuple[int, int, int]] = []
    names: set[str] = set()
    lock = threading.Lock()

    def work(block: int, start: int, stop: int) -> None:
        seen[start:stop] += 1
        with lock:
            blocks.append((block, start, stop))
            names.add(threading.current_thread().name)

    for_blocks(n, rows, threads, work)
    assert (seen == 1).all()
    assert sorted(blocks) == [(i, s, min(s + rows, n)) for i, s in enumerate(block_starts(n, rows))]
    assert len(blocks) == 11
    if threads == 1:
        assert names == {threading.current_thread().name}  # no pool for one thread


def test_an_error_in_a_block_is_raised() -> None:
    def work(block: int, start: int, stop: int) -> None:
        if block == 3:
            raise ValueError(f"block {block} failed")

    with pytest.raises(ValueError, match="block 3 failed"):
        for_blocks(1000, 100, 2, work)


def test_threads_and_rows() -> None:
    assert block_threads(3) == 3
    assert block_threads(0) >= 1
    assert shared_rows(4096) == 2048 and shared_rows(10) == 64
    assert list(block_starts(0, 64)) == []


def test_docs_plugin_example_runs_on_a_tagger(tmp_path: Path) -> None:
    """The for_blocks example in docs/plugins.md: a real ONNX MLP in blocks of 64 rows, on the
    one-thread twin of taggers set to 1 and 3 threads, gives the whole-array scores and the
    same total, bit for bit; the twin's runs count in the tagger's."""
    weights = dense_weights([6, 8, 1], seed=4)
    path = str(save(mlp_model(weights), tmp_path / "m.onnx"))
    text = (REPO / "docs" / "plugins.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "for_blocks" in b)
    namespace: dict[str, object] = {}
    exec(compile(block, "docs/plugins.md", "exec"), namespace)
    scores_and_total = namespace["scores_and_total"]
    x = np.random.default_rng(5).normal(size=(1000, 6)).astype(np.float32)
    taggers = {t: Tagger(ModelConfig(path, batch_size=128, threads=t)) for t in (1, 3)}
    assert taggers[3].block_threads == 3 and taggers[1].block_threads == 1
    one = scores_and_total(taggers[1], {"x": x})  # type: ignore[operator]
    three = scores_and_total(taggers[3], {"x": x})  # type: ignore[operator]
    np.testing.assert_array_equal(one[0], three[0])
    assert one[1] == three[1]
    np.testing.assert_allclose(one[0], mlp_forward(weights, x)[:, 0], rtol=1e-5, atol=1e-6)
    for tagger in taggers.values():  # 64-row blocks: half of cached_rows
        assert tagger.n_runs == len(block_starts(1000, 64)) and tagger.one_thread().n_runs == 0


@pytest.mark.parametrize("helping", [True, False])
def test_helped_blocks_run_once_each_and_helpers_only_while_asked(helping: bool) -> None:
    """Every block runs once; helpers take blocks only while ``helping()`` holds, so with it
    false the calling thread runs them all; a block's error is raised to the caller."""
    from hepaudit.model.blocks import for_blocks_helped

    ran: list[tuple[int, int, int, str]] = []

    def work(i: int, start: int, stop: int) -> None:
        ran.append((i, start, stop, threading.current_thread().name))

    for_blocks_helped(10, 3, 3, work, lambda: helping)
    assert sorted(r[:3] for r in ran) == [(0, 0, 3), (1, 3, 6), (2, 6, 9), (3, 9, 10)]
    if not helping:
        assert {r[3] for r in ran} == {threading.current_thread().name}

    def fails(i: int, start: int, stop: int) -> None:
        if i == 2:
            raise ValueError("block 2")

    with pytest.raises(ValueError, match="block 2"):
        for_blocks_helped(10, 3, 2, fails, lambda: helping)
