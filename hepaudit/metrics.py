"""Exact figures of merit: ROC AUC with ties and weights, rank agreement between rankings.

The AUC is the probability that a random signal jet scores above a random background
jet, ties counting one half (the Mann-Whitney statistic), with per-jet weights when
given. It is computed from one sort, exactly, with no binning.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from hepaudit.model.blocks import block_threads

T = TypeVar("T")

_QUERIES = 1 << 18  # binary searches per block in roc_auc


def roc_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Exact (weighted) ROC AUC; ties between signal and background count 1/2.

    Both classes are sorted; each jet of the smaller class then finds, by binary search, how
    many of the other class lie strictly below it and tie with it (weighted: each signal
    jet finds the background weight below it). No stable sort is needed (ties are found by value),
    which makes this several times faster than ranking all jets together.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels).astype(bool)
    sig, bkg = scores[labels], scores[~labels]
    if weights is None:
        if len(sig) == 0 or len(bkg) == 0:
            return float("nan")
        # the masked copies are ours: sort them in place (no third copy of every score)
        bkg.sort()
        sig.sort()  # sorted queries: the binary searches walk memory in order (3x faster)
        # the smaller class searches the larger (an OOD reference of 10^4 jets against 10^6
        # audited ones); the counts are integers, so either way gives the same AUC exactly
        queries, table = (sig, bkg) if len(sig) <= len(bkg) else (bkg, sig)
        below = upto = 0.0
        for start in range(0, len(queries), _QUERIES):  # index arrays a block at a time, not 16 bytes a jet
            part = queries[start:start + _QUERIES]
            below += float(np.searchsorted(table, part, side="left").sum(dtype=np.float64))
            upto += float(np.searchsorted(table, part, side="right").sum(dtype=np.float64))
        pairs = float(len(sig)) * float(len(bkg))
        if queries is bkg:  # below / upto count signal under / up to each background jet
            below, upto = pairs - upto, pairs - below
        return (below + 0.5 * (upto - below)) / pairs
    w = np.asarray(weights, dtype=np.float64)
    w_sig, w_bkg = w[labels], w[~labels]
    total_sig, total_bkg = w_sig.sum(), w_bkg.sum()
    if total_sig <= 0 or total_bkg <= 0:
        return float("nan")
    order = np.argsort(bkg, kind="quicksort")
    ordered = bkg[order]
    by_score = np.argsort(sig, kind="quicksort")
    sig, w_sig = sig[by_score], w_sig[by_score]
    cumulative = np.concatenate([[0.0], np.cumsum(w_bkg[order])])
    below = cumulative[np.searchsorted(ordered, sig, side="left")]
    upto = cumulative[np.searchsorted(ordered, sig, side="right")]
    return float(np.sum(w_sig * (below + 0.5 * (upto - below))) / (total_sig * total_bkg))


def roc_auc_each(column: Callable[[int], np.ndarray], n: int, labels: np.ndarray,
                 weights: np.ndarray | None = None, threads: int | None = None) -> np.ndarray:
    """AUC of ``column(k)`` for k < n against the same labels, on a few threads.

    numpy's sorts and binary searches release the GIL, so the AUCs of a large audit (one per
    occluded unit, each sorting every jet) run in parallel; the client of a Dask audit does
    this alone at the end, while the workers are idle.
    """
    labels = np.asarray(labels).astype(bool)
    return np.array(on_threads(lambda k: roc_auc(column(k), labels, weights), n, threads))


def on_threads(work: Callable[[int], T], n: int, threads: int | None = None) -> list[T]:
    """``[work(k) for k < n]``, on ``threads`` threads (default: one per core, at most n)."""
    threads = threads or min(n, block_threads(0))
    if threads <= 1 or n <= 1:
        return [work(k) for k in range(n)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(work, range(n)))


def roc_auc_rows(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """AUC of each row of a (K, N) score array against the same labels."""
    return np.array([roc_auc(row, labels, weights) for row in scores])


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b between two score vectors over the same items (O(n^2), n = features)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    n = len(a)
    if n < 2:
        return float("nan")
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    iu = np.triu_indices(n, 1)
    da, db = da[iu], db[iu]
    concordant_minus_discordant = np.sum(da * db)
    n_a = np.sum(da != 0)
    n_b = np.sum(db != 0)
    if n_a == 0 or n_b == 0:
        return float("nan")
    return float(concordant_minus_discordant / np.sqrt(n_a * n_b))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 0, tied values sharing the mean of their positions (Spearman's convention).
    Ties are found by value after an unstable sort, several times faster than a stable one,
    and the ranks do not depend on how the sort ordered the tied values."""
    values = np.asarray(values)
    order = np.argsort(values)
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # first position of each value
    ends = np.r_[starts[1:], len(values)]
    group = np.repeat(np.arange(len(starts)), ends - starts)
    ranks = np.empty(len(values))
    ranks[order] = (0.5 * (starts + ends - 1))[group]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's ρ over the items where both are finite; None for fewer than 3 or a constant."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return None
    ra, rb = average_ranks(a[ok]), average_ranks(b[ok])
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def top_k_overlap(ranked_a: list[str], ranked_b: list[str], k: int = 10) -> float:
    """Fraction of the top-k names two rankings share."""
    k = min(k, len(ranked_a), len(ranked_b))
    if k == 0:
        return float("nan")
    return len(set(ranked_a[:k]) & set(ranked_b[:k])) / k


#: Jets of each class taken at a time by :class:`ReplicateAUC` (about 1 MB per replicate block:
#: the block's running sums stay in cache while the signal jets read them).
REPLICATE_BLOCK_JETS = 8192


class ReplicateAUC:
    """The weighted AUC of many score columns under the same bootstrap weights: the
    replicates of ΔAUC, one sort of each class per column serving every replicate.

    Replicate r weighs jet i by ``multipliers[i, r] × weights[i]``: for the Poisson bootstrap
    the multipliers are small counts (uint8, a column of ones for the jets' own weights) and
    the weights the data's (None: 1), so the whole bootstrap of 2M jets is 66 MB rather than
    0.5 GB of float64. For a column, both classes are sorted by score and the background swept
    in blocks of ``REPLICATE_BLOCK_JETS``: each replicate's running background weight,
    read by every signal jet at the sum strictly below its score, and by the jets tied with
    the background also up to it (ties count ½, as :func:`roc_auc`). Each block is gathered
    jet-major (one contiguous row of counts a jet) and summed replicate-major (contiguous
    along the jets), into buffers each thread keeps for the column, so memory does not grow
    with the jets and no pass is strided.
    """

    def __init__(self, labels: np.ndarray, multipliers: np.ndarray, weights: np.ndarray | None = None) -> None:
        """``multipliers`` (jets, R) and ``weights`` (jets,), in the order the jets have in
        ``labels`` and in every score column."""
        self.signal = np.asarray(labels).astype(bool)
        self.sig_jets, self.bkg_jets = np.flatnonzero(self.signal), np.flatnonzero(~self.signal)
        m = np.asarray(multipliers)
        self.m_sig, self.m_bkg = m[self.sig_jets], m[self.bkg_jets]  # jet-major rows, copied once
        w = None if weights is None else np.asarray(weights, np.float64)
        self.w_sig = None if w is None else w[self.sig_jets]
        self.w_bkg = None if w is None else w[self.bkg_jets]
        self.pairs = self._total(self.m_sig, self.w_sig) * self._total(self.m_bkg, self.w_bkg)
        self._local = threading.local()  # each thread's buffers for the blocks (``_scratch``)

    @staticmethod
    def _total(m: np.ndarray, w: np.ndarray | None) -> np.ndarray:
        return m.sum(axis=0, dtype=np.float64) if w is None else w @ m.astype(np.float64)

    @classmethod
    def from_weights(cls, labels: np.ndarray, weights: np.ndarray) -> ReplicateAUC:
        """From one (R, n) matrix of weights over every jet."""
        return cls(labels, np.asarray(weights, np.float64).T)

    def _scratch(self, name: str, shape: tuple[int, int], dtype: type[np.generic] | np.dtype) -> np.ndarray:
        """A C-contiguous array of ``shape`` on a buffer this thread keeps (grown when too small):
        the blocks' temporaries are allocated once per column, not at every block. Fresh
        arrays of a megabyte each cost page faults at every block, and more so in Dask workers,
        whose allocator hands freed memory back to the system at once."""
        buffers: dict[tuple[str, np.dtype], np.ndarray] | None = getattr(self._local, "buffers", None)
        if buffers is None:
            buffers = self._local.buffers = {}
        key = (name, np.dtype(dtype))
        size = shape[0] * shape[1]
        kept = buffers.get(key)
        if kept is None or len(kept) < size:
            kept = buffers[key] = np.empty(max(size, 1), key[1])
        return kept[:size].reshape(shape)

    def _vector(self, name: str, n: int, dtype: type[np.generic] | np.dtype) -> np.ndarray:
        """A 1-d array of ``n`` on a buffer this thread keeps (:meth:`_scratch`)."""
        return self._scratch(name, (1, n), dtype)[0]

    def _rows(self, side: str, m: np.ndarray, w: np.ndarray | None, jets: np.ndarray) -> np.ndarray:
        """(R, len(jets)) weights of these jets, replicate-major (the counts as they are when
        unweighted: the sums that read them are float64), on this thread's buffers for ``side``."""
        jet_major = np.take(m, jets, axis=0, mode="clip", out=self._scratch(side + " jets", (len(jets), m.shape[1]),
                                                                           m.dtype))
        rows = self._scratch(side, (m.shape[1], len(jets)), m.dtype if w is None else np.float64)
        np.copyto(rows, jet_major.T)
        if w is not None:
            rows *= w[jets]
        return rows

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        """(R,) the AUC of ``scores`` under each replicate's weights."""
        scores = np.asarray(scores)
        # the column's per-class copies on this thread's buffers: in a Dask worker (whose
        # allocator maps every large array afresh, docs/dask.md "Memory") fresh copies of each
        # column made the finish of a million jets ~1.5 times slower than in a plain process
        sig = np.take(scores, self.sig_jets, out=self._vector("signal scores", len(self.sig_jets), scores.dtype))
        bkg = np.take(scores, self.bkg_jets, out=self._vector("background scores", len(self.bkg_jets), scores.dtype))
        by_bkg, by_sig = np.argsort(bkg), np.argsort(sig)
        ordered = np.take(bkg, by_bkg, out=self._vector("background sorted", len(bkg), scores.dtype))
        sig_sorted = np.take(sig, by_sig, out=self._vector("signal sorted", len(sig), scores.dtype))
        # positions in the running background sum C[0..n_bkg] (C[k]: the k lowest), ascending: a
        # signal jet counts the background below it, and half of the background tied with it
        below = np.searchsorted(ordered, sig_sorted, side="left")
        # the jets that may tie: the background's next score is not above theirs (all the ties,
        # NaN included; a jet wrongly kept reads the same C twice and adds nothing)
        may_tie = self._vector("may tie", len(below), np.bool_)
        if len(ordered):
            following = np.take(ordered, below, mode="clip", out=self._vector("following", len(below), ordered.dtype))
            np.greater(following, sig_sorted, out=may_tie)
            np.logical_not(may_tie, out=may_tie)
            may_tie &= below < len(ordered)
        else:  # no background jet to tie with (every AUC is then undefined)
            may_tie[:] = False
        tied = np.flatnonzero(may_tie)
        upto = self._vector("upto", len(below), below.dtype)
        np.copyto(upto, below)
        upto[tied] = np.searchsorted(ordered, sig_sorted[tied], side="right")
        # twice the numerator, from groups of signal jets (in score order) that each read C at
        # some positions with a coefficient: 2 C[below] for every jet, then C[upto] - C[below]
        # for the tied ones only (a few percent of saturated scores); both ends for every jet
        # when most are tied
        groups: list[tuple[np.ndarray, list[tuple[np.ndarray, int]]]]
        if 2 * len(tied) > len(sig):
            groups = [(by_sig, [(below, 1), (upto, 1)])]
        else:
            groups = [(by_sig, [(below, 2)])]
            if len(tied):
                groups.append((by_sig[tied], [(below[tied], -1), (upto[tied], 1)]))
        # unweighted counts add up exactly in integers, which numpy sums faster than doubles: the
        # running count in int32 (while 255 × jets fits), the signal's products in int64
        exact = self.w_bkg is None and self.m_bkg.dtype == np.uint8 and 255 * len(bkg) < 2**31
        running_type: type[np.generic] = np.int32 if exact else np.float64
        total_type: type[np.generic] = np.int64 if exact else np.float64
        twice: np.ndarray = np.zeros(len(self.pairs), total_type)
        carry: np.ndarray = np.zeros((len(self.pairs), 1), running_type)
        for a in range(0, len(bkg), REPLICATE_BLOCK_JETS):
            b = min(a + REPLICATE_BLOCK_JETS, len(bkg))
            rows = self._rows("background", self.m_bkg, self.w_bkg, by_bkg[a:b])
            # cast first, then summed in place: numpy's cumsum casting as it goes was 2.6 times
            # slower, and in a Dask worker (allocator) 6 times
            running: np.ndarray = self._scratch("running", rows.shape, running_type)
            np.copyto(running, rows)
            np.cumsum(running, axis=1, out=running)
            running += carry  # C[a+1 .. b]
            for jets, reads in groups:
                # the group's jets that read C[a+1 .. b] at any of its positions, gathered once
                # (a group's last positions are at or above its first, jet by jet)
                lo = int(np.searchsorted(reads[-1][0], a, side="right"))
                hi = int(np.searchsorted(reads[0][0], b, side="right"))
                if hi <= lo:
                    continue
                sig_w = self._rows("signal", self.m_sig, self.w_sig, jets[lo:hi])
                for at, coefficient in reads:
                    i0, i1 = np.searchsorted(at[lo:hi], (a, b), side="right")
                    if i1 > i0:
                        read = np.take(running, at[lo + i0:lo + i1] - (a + 1), axis=1, mode="clip",
                                       out=self._scratch("read", (len(running), i1 - i0), running_type))
                        twice += coefficient * np.einsum("rn,rn->r", sig_w[:, i0:i1], read, dtype=total_type)
            carry = running[:, -1:].copy()  # the buffer is the next block's
        numerator = twice.astype(np.float64) / 2  # exact for integer counts below 2^53
        with np.errstate(invalid="ignore", divide="ignore"):
            return numerator / self.pairs

    def each(self, column: Callable[[int], np.ndarray], n: int, threads: int | None = None) -> np.ndarray:
        """(n, R) the replicates of ``column(k)`` for k < n, on a few threads (numpy's sorts,
        gathers and sums release the GIL)."""
        return np.array(on_threads(lambda k: self(column(k)), n, threads)).reshape(n, len(self.pairs))


def roc_auc_replicates(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted AUC of one score column under each row of ``weights`` (R, n), ties ½
    (:class:`ReplicateAUC`, for one column)."""
    return ReplicateAUC.from_weights(labels, weights)(scores)
