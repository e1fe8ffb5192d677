"""Near-duplicate search: perceptual-hash matches, embedding-cosine matches, and which to keep.

* :class:`HashIndex` finds every (query, target) pair whose pHash *and* dHash are within
  the given Hamming distances under the best of the target's 8 flips/rotations. It is exact,
  not approximate: by the pigeonhole principle two 64-bit hashes within distance ``t`` agree
  exactly on at least one of ``t + 1`` bit blocks, so only hashes sharing a block value are
  compared (multi-index hashing), block by block with numpy.
* :func:`cosine_matches` finds pairs whose embeddings have cosine >= a threshold (blockwise
  matrix products; O(N^2 D) arithmetic, fine up to a few hundred thousand samples on a CPU).
* :func:`choose_kept` decides, deterministically, which member of each group of duplicates
  stays: samples are visited best first (highest score, then smallest key); one is dropped
  when it duplicates a sample already kept. Unlike connected components, this never drops A
  because A ~ B ~ C when A and C are not alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rsdata.filtering.hashing import N_VARIANTS, hamming

HASH_BITS = 64
MAX_BLOCK_CELLS = 1 << 22  # distances computed at once in one bucket
# reasons, strongest first (an exact copy is also a near duplicate, and so on)
EXACT = "exact_duplicate"
NEAR = "near_duplicate"
SEMANTIC = "semantic_duplicate"
STRENGTH = {EXACT: 0, NEAR: 1, SEMANTIC: 2}


@dataclass
class Matches:
    """Matched pairs: ``query[i]`` matches ``target[i]`` (indices into the inputs)."""

    query: np.ndarray
    target: np.ndarray
    phash_distance: np.ndarray
    dhash_distance: np.ndarray

    def __len__(self) -> int:
        return int(self.query.size)


def bit_blocks(n_blocks: int) -> list[tuple[int, int]]:
    """(shift, width) of ``n_blocks`` contiguous blocks covering the 64 bits."""
    edges = np.linspace(0, HASH_BITS, n_blocks + 1).round().astype(int)
    return [(int(lo), int(hi - lo)) for lo, hi in zip(edges[:-1], edges[1:])]


def _groups(values: np.ndarray) -> dict[int, np.ndarray]:
    order = np.argsort(values, kind="stable")
    uniq, start = np.unique(values[order], return_index=True)
    return {int(v): order[s:e] for v, s, e in zip(uniq, start, list(start[1:]) + [values.size])}


class HashIndex:
    """Perceptual hashes of target images (all 8 variants each), indexed for near-match queries.

    ``target_*``: ``uint64[NT, 8]`` (:data:`TRANSFORMS` order). A query (q) matches target t
    when, for some variant k of t, pHash distance <= ``max_phash`` and dHash distance <=
    ``max_dhash``. The block tables are built once, so many query batches are cheap.
    """

    def __init__(self, target_phash: np.ndarray, target_dhash: np.ndarray, max_phash: int,
                 max_dhash: int) -> None:
        if not 0 <= max_phash < HASH_BITS:
            raise ValueError(f"max_phash must be in 0..{HASH_BITS - 1}, not {max_phash}")
        self.tp = np.asarray(target_phash, dtype=np.uint64).reshape(-1, N_VARIANTS)
        self.td = np.asarray(target_dhash, dtype=np.uint64).reshape(-1, N_VARIANTS)
        self.max_phash = int(max_phash)
        self.max_dhash = int(max_dhash)
        self.flat = self.tp.reshape(-1)
        self.blocks = bit_blocks(self.max_phash + 1)
        self.tables = [_groups(self._block(self.flat, shift, width)) for shift, width in self.blocks]

    def __len__(self) -> int:
        return int(self.tp.shape[0])

    @staticmethod
    def _block(values: np.ndarray, shift: int, width: int) -> np.ndarray:
        return (values >> np.uint64(shift)) & np.uint64((1 << width) - 1)

    def query(self, query_phash: np.ndarray, query_dhash: np.ndarray,
              exclude_self: bool = False) -> Matches:
        """Every matching (query index, target index) pair, once, with its best variant's
        distances. ``exclude_self``: queries are the targets themselves (drop q == t)."""
        qp = np.asarray(query_phash, dtype=np.uint64).reshape(-1)
        qd = np.asarray(query_dhash, dtype=np.uint64).reshape(-1)
        found_q: list[np.ndarray] = []
        found_e: list[np.ndarray] = []
        for (shift, width), table in zip(self.blocks, self.tables):
            for value, q_idx in _groups(self._block(qp, shift, width)).items():
                e_idx = table.get(value)
                if e_idx is None:
                    continue
                step = max(1, MAX_BLOCK_CELLS // max(e_idx.size, 1))  # bound memory on big buckets
                for s in range(0, q_idx.size, step):
                    part = q_idx[s:s + step]
                    qi, ei = np.nonzero(hamming(qp[part][:, None], self.flat[e_idx][None, :]) <= self.max_phash)
                    found_q.append(part[qi])
                    found_e.append(e_idx[ei])
        if not found_q:
            return _empty()
        q = np.concatenate(found_q)
        e = np.concatenate(found_e)
        t, k = e // N_VARIANTS, e % N_VARIANTS
        keep = q != t if exclude_self else np.ones(q.size, dtype=bool)
        q, t, k = q[keep], t[keep], k[keep]
        dp = hamming(qp[q], self.tp[t, k])
        dd = hamming(qd[q], self.td[t, k])
        ok = dd <= self.max_dhash
        q, t, dp, dd = q[ok], t[ok], dp[ok], dd[ok]
        if not q.size:
            return _empty()
        # one row per (q, t): the best variant (smallest pHash, then dHash distance)
        order = np.lexsort((dd, dp, t, q))
        q, t, dp, dd = q[order], t[order], dp[order], dd[order]
        first = np.ones(q.size, dtype=bool)
        first[1:] = (q[1:] != q[:-1]) | (t[1:] != t[:-1])
        return Matches(q[first], t[first], dp[first], dd[first])


def _empty() -> Matches:
    z = np.zeros(0, dtype=np.int64)
    return Matches(z, z.copy(), z.copy(), z.copy())


def cosine_matches(query: np.ndarray, target: np.ndarray, threshold: float,
                   exclude_self: bool = False, block: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query index, target index, cosine) of pairs with cosine >= ``threshold``.

    Inputs are L2-normalised ``(N, D)`` embeddings. ``exclude_self``: same set, drop i == i.
    """
    a = np.asarray(query, dtype=np.float32)
    b = np.asarray(target, dtype=np.float32)
    qs, ts, cs = [], [], []
    for start in range(0, a.shape[0], block):
        sims = a[start:start + block] @ b.T
        if exclude_self:
            rows = np.arange(sims.shape[0])
            cols = rows + start
            inside = cols < sims.shape[1]
            sims[rows[inside], cols[inside]] = -np.inf
        qi, ti = np.nonzero(sims >= threshold)
        qs.append(qi + start)
        ts.append(ti)
        cs.append(sims[qi, ti])
    if not qs:
        z = np.zeros(0, dtype=np.int64)
        return z, z.copy(), np.zeros(0, dtype=np.float32)
    return np.concatenate(qs), np.concatenate(ts), np.concatenate(cs)


@dataclass
class Choice:
    """Per sample: kept or not, the reason it was dropped and the sample it duplicates."""

    kept: np.ndarray  # bool[N]
    reason: list[str | None]
    duplicate_of: np.ndarray  # int[N], -1 when kept


def priority_order(keys: list[str], scores: np.ndarray | None = None) -> np.ndarray:
    """Indices best first: highest score (when given; NaN last), then smallest key."""
    rank_key = np.argsort(np.argsort(np.array(keys, dtype=object), kind="stable"), kind="stable")
    if scores is None:
        return np.argsort(rank_key, kind="stable")
    s = np.where(np.isnan(scores), -np.inf, scores)
    return np.lexsort((rank_key, -s))


def choose_kept(n: int, order: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray, str]]) -> Choice:
    """Visit samples in ``order``; drop one that matches (any pair kind) a sample already kept.

    ``pairs``: (i, j, reason) arrays; a pair links i and j both ways. When a dropped sample
    matches several kept ones, the strongest reason (exact > near > semantic) is reported.
    """
    links: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for i_arr, j_arr, reason in pairs:
        strength = STRENGTH[reason]
        for i, j in zip(i_arr.tolist(), j_arr.tolist()):
            if i != j:
                links[i].append((j, strength))
                links[j].append((i, strength))
    reasons = [EXACT, NEAR, SEMANTIC]
    kept = np.zeros(n, dtype=bool)
    dup_of = np.full(n, -1, dtype=np.int64)
    why: list[str | None] = [None] * n
    for i in order.tolist():
        best: tuple[int, int] | None = None
        for j, strength in links[i]:
            if kept[j] and (best is None or strength < best[1] or (strength == best[1] and j < best[0])):
                best = (j, strength)
        if best is None:
            kept[i] = True
        else:
            dup_of[i] = best[0]
            why[i] = reasons[best[1]]
    return Choice(kept, why, dup_of)
