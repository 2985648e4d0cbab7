"""ΔAUC's state spilled out of memory: SpilledColumns."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from hepaudit.explainers.columns import SpilledColumns


def _chunks(rng: np.random.Generator, sizes: list[int], rows: int) -> list[np.ndarray]:
    return [rng.standard_normal((rows, n)) for n in sizes]


def test_spilled_columns_give_back_every_row() -> None:
    rng = np.random.default_rng(1)
    store = SpilledColumns(3)
    chunks = _chunks(rng, [5, 4, 9, 0, 2], 3)
    for c in chunks:
        store.append(c[:1], c[1:])  # stacked parts: one row, then the others
    whole = np.concatenate(chunks, axis=1).astype(np.float32)
    assert len(store) == 20 and store.nbytes == whole.nbytes
    for k in range(3):
        np.testing.assert_array_equal(store.row(k), whole[k])
    # the columns are in the file, not in the object
    file = store._parts[0][0]
    assert os.fstat(file.fileno()).st_size == whole.nbytes
    with pytest.raises(IndexError):
        store.row(3)


def test_spilled_columns_merge_and_pickle_keep_order() -> None:
    rng = np.random.default_rng(2)
    a, b = SpilledColumns(2), SpilledColumns(2)
    ca, cb = _chunks(rng, [3, 4], 2), _chunks(rng, [6], 2)
    for c in ca:
        a.append(c)
    for c in cb:
        b.append(c)
    merged = a.merged(b)
    a.append(rng.standard_normal((2, 5)))  # appending to a later must not change the merged store
    expected = np.concatenate(ca + cb, axis=1).astype(np.float32)
    for k in range(2):
        np.testing.assert_array_equal(merged.row(k), expected[k])
    back = pickle.loads(pickle.dumps(merged))  # as a Dask state travels: spilled again on arrival
    np.testing.assert_array_equal(back.row(1), expected[1])
    back.append(np.ones((2, 2)))
    np.testing.assert_array_equal(back.row(0)[-2:], [1, 1])
    flags = SpilledColumns(1, bool)
    flags.append(np.array([[True, False, True]]))
    assert flags.row(0).tolist() == [True, False, True]


def test_spilled_columns_refuse_the_wrong_number_of_rows() -> None:
    store = SpilledColumns(3)
    with pytest.raises(ValueError, match=r"\(3, n\)"):
        store.append(np.zeros((2, 4)))
    with pytest.raises(ValueError):
        store.append(np.zeros((1, 4)), np.zeros((2, 5)))
    assert store.row(0).shape == (0,)
    with pytest.raises(ValueError, match="merge"):
        store.merged(SpilledColumns(2))


def test_docs_spilled_state_snippet_runs() -> None:
    """The SpilledColumns example in docs/plugins.md, on two chunks merged as Dask would."""
    import re
    from pathlib import Path
    from types import SimpleNamespace

    from hepaudit.metrics import roc_auc

    text = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "SpilledColumns" in b)
    namespace: dict[str, object] = {}
    exec(compile(block, "docs/plugins.md", "exec"), namespace)
    explainer = namespace["SpilledState"]()  # type: ignore[operator]
    rng = np.random.default_rng(3)
    chunks = [SimpleNamespace(labels=rng.integers(0, 2, n).astype(np.int8), score=rng.random(n)) for n in (40, 25)]
    a = explainer.update(explainer.start(), chunks[0])
    b = pickle.loads(pickle.dumps(explainer.update(explainer.start(), chunks[1])))
    got = explainer.finish(explainer.merge(a, b))
    labels = np.concatenate([c.labels for c in chunks])
    scores = np.concatenate([c.score for c in chunks]).astype(np.float32)
    assert got == roc_auc(scores, labels)


def test_spilled_columns_without_pread_and_pwrite(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the os module has no pread/pwrite (Windows), reads and writes seek under a lock."""
    monkeypatch.delattr(os, "pread", raising=False)
    monkeypatch.delattr(os, "pwrite", raising=False)
    rng = np.random.default_rng(4)
    store = SpilledColumns(2)
    chunks = _chunks(rng, [7, 3], 2)
    for c in chunks:
        store.append(c)
    expected = np.concatenate(chunks, axis=1).astype(np.float32)
    np.testing.assert_array_equal(store.row(1), expected[1])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(store)).row(0), expected[0])
