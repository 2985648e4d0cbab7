"""Read-ahead (hepaudit.run.prefetch): the same audit with and without it, errors raised where
they happened, and nothing left running or open when the loop stops early."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import hepaudit
from hepaudit.errors import DataError
from hepaudit.run.prefetch import Prefetched
from hepaudit.testing import tiny_audit


def _produced(n: int, closed: list[str], fail_at: int | None = None) -> Iterator[int]:
    try:
        for i in range(n):
            if i == fail_at:
                raise DataError(f"item {i} is bad")
            time.sleep(0.001)
            yield i
    finally:
        closed.append(threading.current_thread().name)


def test_items_arrive_in_order_and_the_producer_ends() -> None:
    closed: list[str] = []
    assert list(Prefetched(_produced(50, closed), depth=2)) == list(range(50))
    assert closed  # the source generator ran to its end (its finally ran)
    assert not [t for t in threading.enumerate() if t.name == "hepaudit-read-ahead"]


def test_a_producer_error_is_raised_at_its_item() -> None:
    closed: list[str] = []
    got = []
    with pytest.raises(DataError, match="item 7 is bad"):
        for item in Prefetched(_produced(20, closed, fail_at=7)):
            got.append(item)
    assert got == list(range(7))
    assert not [t for t in threading.enumerate() if t.name == "hepaudit-read-ahead"]


def test_the_producer_sees_whether_the_consumer_waits_for_it() -> None:
    """Before the first item, and while the consumer is blocked asking for the next one, the
    consumer idles (the producer may build on every core); while it works on an item, not."""
    holder: list[Prefetched[int]] = []
    asked = threading.Event()
    seen: list[bool] = []

    def items() -> Iterator[int]:
        seen.append(not holder or holder[0].consumer_idles())  # before any item
        yield 0
        asked.wait()  # the consumer works on item 0, then asks for item 1 and blocks
        time.sleep(0.2)
        seen.append(holder[0].consumer_idles())
        yield 1

    holder.append(Prefetched(items()))
    it = iter(holder[0])
    assert next(it) == 0
    assert not holder[0].consumer_idles()  # working on item 0
    asked.set()
    assert next(it) == 1
    assert seen == [True, True]


def test_closing_early_stops_the_producer_and_closes_the_source() -> None:
    closed: list[str] = []
    items = Prefetched(_produced(10_000, closed))
    assert next(items) == 0
    items.close()
    assert closed, "the source generator was not closed"
    assert not [t for t in threading.enumerate() if t.name == "hepaudit-read-ahead"]
    with pytest.raises(StopIteration):
        next(items)


@pytest.mark.parametrize("cache_mb", [0, 512])
def test_an_audit_with_read_ahead_equals_one_without(tmp_path: Path, cache_mb: int) -> None:
    """Many chunks (read twice when nothing is cached): every number and per-jet column the same."""
    config = tiny_audit(tmp_path, {"dauc": {}, "mad": {}, "gradient": {}}, n=3000, step_size=250)
    text = config.read_text().replace("progress = false", f"progress = false\ncache_mb = {cache_mb}")
    reports = {}
    for prefetch in (True, False):
        path = tmp_path / f"audit_{prefetch}.toml"
        path.write_text(text.replace("progress = false", f"progress = false\nprefetch = {str(prefetch).lower()}"))
        out = tmp_path / f"out_{prefetch}"
        report = hepaudit.audit(path, out=out)
        reports[prefetch] = report
        assert report.timing["chunks_read"] == (12 if cache_mb else 24)
    on, off = reports[True], reports[False]
    assert on.data["n_jets"] == off.data["n_jets"] == 3000
    for name in ("dauc", "mad", "gradient"):
        a = [(s.feature, s.score, s.score_std) for s in on.explainers[name].feature_importance]
        b = [(s.feature, s.score, s.score_std) for s in off.explainers[name].feature_importance]
        assert a == b
    import uproot

    with uproot.open(tmp_path / "out_True" / "per_jet.root") as f, \
            uproot.open(tmp_path / "out_False" / "per_jet.root") as g:
        x, y = f["hepaudit"].arrays(library="np"), g["hepaudit"].arrays(library="np")
    assert x.keys() == y.keys()
    for key in x:
        np.testing.assert_array_equal(x[key], y[key])
    np.testing.assert_array_equal(x["entry"], np.arange(3000))
    saved = json.loads((tmp_path / "out_True" / "report.json").read_text())
    assert saved["config"]["execution"]["prefetch"] is True


def test_a_bad_chunk_read_ahead_fails_the_audit_with_its_message(tmp_path: Path) -> None:
    """NaN inputs in a later chunk, read on the thread: the same error, counted over the whole sample."""
    import uproot
    from builders import write_jets

    config = tiny_audit(tmp_path, {"mad": {}}, n=2000, step_size=250)
    with uproot.open(tmp_path / "jets.root") as f:
        arrays = f["jets"].arrays(library="np")
    arrays["f1"][1500:1510] = np.nan
    write_jets(tmp_path / "jets.root", arrays)
    with pytest.raises(DataError, match="10 of 2000 jets have NaN or inf"):
        hepaudit.audit(config, out=None)
    assert not [t for t in threading.enumerate() if t.name == "hepaudit-read-ahead"]
