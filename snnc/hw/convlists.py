"""The synapse lists of a convolution source population: which kernel taps each source walks.

A convolution is stored without unrolling: a list of nonzero kernel taps ``(co, ky, kx)`` per
input channel, shared by the channel's sources, each source's descriptor (``ptr``) naming the
slice of the list it walks (docs/architecture.md, section 5). Two layouts:

``"channel"``
    One list per input channel: every nonzero tap of every outgoing convolution. A source near
    a border, or on a row or column that a strided convolution skips, walks taps that land
    outside the output; they cost a cycle each and update nothing.

``"class"`` (the default)
    A source walks only taps that land. The taps that land for a source at ``(y, x)`` are
    ``R(y) x C(x)``: per outgoing convolution, the rows ``ky`` with ``y + p_y - ky`` a multiple
    of ``s_y`` inside ``0 .. s_y*(H_out-1)``, and likewise the columns. Sources with the same
    ``C(x)`` form a column class, those with the same ``R(y)`` a row class. Per input channel
    and column class the mapper stores one list, ordered by kernel row (items ``(conv, ky)``
    sorted by the first and last source row they reach), so that the taps of a row class are one
    contiguous slice of it; a row class whose taps are not contiguous gets a list of its own
    after it. Every source then walks exactly its landing taps. The cost is memory: one list
    per column class instead of one per channel (about 2.3x the channel layout's entries for
    3x3 kernels with padding 1 on small maps).

The walk, the hardware and the cycle formula are the same for both: a source walks
``ptr.count`` entries (its fan-out). Only the lists and the descriptors differ.

On a core with synapse lanes the entries of one issue whose targets share a membrane bank cost a
cycle each; :func:`order_for_banks` reorders the lists (inside what every slice covers whole)
against these conflicts, summed over all the sources that walk them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Conv, Graph
from .params import issue_stalls

__all__ = ["CONV_LISTS", "DEFAULT_CONV_LISTS", "ConvLists", "conv_lists", "check_layout",
           "landing_taps", "landing_targets", "bank_stalls", "order_for_banks"]

#: The layouts, and the one snnc uses unless told otherwise.
CONV_LISTS = ("class", "channel")
DEFAULT_CONV_LISTS = "class"


def check_layout(layout: str) -> str:
    if layout not in CONV_LISTS:
        raise ValueError(f"conv_lists must be one of {', '.join(CONV_LISTS)}, not {layout!r}")
    return layout


@dataclass(frozen=True, eq=False)
class ConvLists:
    """The stored entries of one conv source population, in memory order, and each source's
    slice of them (``start`` relative to the population's first entry, ``count``)."""
    proj: np.ndarray     #: index into the population's outgoing convolutions
    ci: np.ndarray       #: input channel (the source's)
    co: np.ndarray
    ky: np.ndarray
    kx: np.ndarray
    start: np.ndarray    #: per source (flattened ``c*H*W + y*W + x``)
    count: np.ndarray

    @property
    def n_entries(self) -> int:
        return len(self.co)

    def permuted(self, perm: np.ndarray) -> "ConvLists":
        """The same lists with the entries in the order ``perm`` (the slices unchanged: ``perm``
        must keep every slice's entries inside it)."""
        return ConvLists(proj=self.proj[perm], ci=self.ci[perm], co=self.co[perm],
                         ky=self.ky[perm], kx=self.kx[perm], start=self.start, count=self.count)


def _landing(n: int, projs, graph: Graph, axis: int) -> list[tuple]:
    """Per coordinate ``v < n`` along ``axis``: per projection, the kernel offsets that land."""
    out = []
    for v in range(n):
        sig = []
        for p in projs:
            o = graph.shape(p.dst)[1 + axis]
            s, pad, kk = p.stride[axis], p.padding[axis], p.weights.shape[2 + axis]
            sig.append(tuple(q for q in range(kk)
                             if (v + pad - q) % s == 0 and 0 <= (v + pad - q) // s < o))
        out.append(tuple(sig))
    return out


def landing_taps(kernel, src_hw, out_hw, stride, padding) -> np.ndarray:
    """Boolean ``kernel``-shaped mask: the taps ``(ky, kx)`` that land for at least one source
    of an ``src_hw`` map (the others are in no "class" list)."""
    axes = []
    for n, o, s, p, kk in zip(src_hw, out_hw, stride, padding, kernel):
        v = np.arange(n)[:, None] + p - np.arange(kk)[None, :]
        axes.append(((v >= 0) & (v % s == 0) & (v // s < o)).any(axis=0))
    return axes[0][:, None] & axes[1][None, :]


def _classes(sigs: list[tuple]) -> tuple[list[tuple], np.ndarray]:
    """The distinct signatures in order of first appearance, and each coordinate's class."""
    order: dict[tuple, int] = {}
    idx = np.array([order.setdefault(s, len(order)) for s in sigs], dtype=np.int64)
    return list(order), idx


def conv_lists(graph: Graph, k: int, layout: str = DEFAULT_CONV_LISTS) -> ConvLists:
    """The lists of population ``k``, whose outgoing projections are all convolutions."""
    check_layout(layout)
    projs = list(graph.outgoing(k))
    assert projs and all(isinstance(p, Conv) for p in projs)
    C, H, W = graph.shape(k)
    nz = [[np.nonzero(p.weights[:, ci]) for p in projs] for ci in range(C)]   # (co, ky, kx)
    if layout == "channel":
        return _channel(nz, C, H, W)
    rows, row_of = _classes(_landing(H, projs, graph, 0))
    cols, col_of = _classes(_landing(W, projs, graph, 1))
    # Items (projection, ky) in the order of the source rows they reach: every row class is then
    # a run of items when the reach of each item is an interval (stride 1), and usually otherwise.
    reach = {}
    for y in range(H):
        for pi, kys in enumerate(rows[row_of[y]]):
            for q in kys:
                lo, hi = reach.get((pi, q), (y, y))
                reach[(pi, q)] = (min(lo, y), max(hi, y))
    items = sorted(reach, key=lambda it: (reach[it][0], reach[it][1], it))
    pos = {it: i for i, it in enumerate(items)}
    # item position by (projection, ky): -1 for a kernel row that lands for no source
    item_of = [np.full(p.weights.shape[2], -1, dtype=np.int64) for p in projs]
    for (pi, q), i in pos.items():
        item_of[pi][q] = i
    # the items of each row class
    wants = [np.array([pos[(pi, q)] for pi, qs in enumerate(kys) for q in qs], dtype=np.int64)
             for kys in rows]
    parts = {name: [] for name in ("proj", "ci", "co", "ky", "kx")}
    slice_start = np.zeros((C, len(cols), len(rows)), np.int64)
    slice_count = np.zeros((C, len(cols), len(rows)), np.int64)
    n = 0

    def emit(ci, cc, keep=None):
        """Append the taps of channel ``ci`` in column class ``cc`` (of the items ``keep`` only,
        if given), in item order; return the item position of each appended entry."""
        nonlocal n
        chunks = []
        for pi, (co, ky, kx) in enumerate(nz[ci]):
            item = item_of[pi][ky]
            sel = np.isin(kx, cols[cc][pi]) & (item >= 0)
            if keep is not None:
                sel &= np.isin(item, keep)
            chunks.append((item[sel], np.full(int(sel.sum()), pi), co[sel], ky[sel], kx[sel]))
        item, pj, co, ky, kx = (np.concatenate(a) if a else np.zeros(0, np.int64)
                                for a in zip(*chunks))
        order = np.lexsort((kx, co, item))          # item order, then (co, kx)
        for name, col in (("proj", pj), ("ci", np.full(len(order), ci)), ("co", co),
                          ("ky", ky), ("kx", kx)):
            parts[name].append(col[order].astype(np.int64))
        n += len(order)
        return item[order]

    for ci in range(C):
        for cc in range(len(cols)):
            base, items_at = n, emit(ci, cc)
            pending = []
            for rc, want in enumerate(wants):
                at = np.flatnonzero(np.isin(items_at, want))
                if len(at) == 0 or at[-1] - at[0] + 1 == len(at):
                    slice_start[ci, cc, rc] = base + (at[0] if len(at) else 0)
                    slice_count[ci, cc, rc] = len(at)
                else:
                    pending.append(rc)
            for rc in pending:                        # not a slice: a list of its own
                slice_start[ci, cc, rc] = n
                slice_count[ci, cc, rc] = len(emit(ci, cc, wants[rc]))
    ch = np.repeat(np.arange(C), H * W)
    r = np.tile(np.repeat(row_of, W), C)
    c = np.tile(np.tile(col_of, H), C)
    count = slice_count[ch, c, r]
    start = np.where(count == 0, 0, slice_start[ch, c, r])
    cat = {name: (np.concatenate(v) if v else np.zeros(0, np.int64)) for name, v in parts.items()}
    return ConvLists(proj=cat["proj"], ci=cat["ci"], co=cat["co"], ky=cat["ky"], kx=cat["kx"],
                     start=start.astype(np.int64), count=count.astype(np.int64))


def _channel(nz, C, H, W) -> ConvLists:
    parts = {name: [] for name in ("proj", "ci", "co", "ky", "kx")}
    counts = []
    for ci in range(C):
        n_c = 0
        for pi, (co, ky, kx) in enumerate(nz[ci]):
            for name, col in (("proj", np.full(len(co), pi)), ("ci", np.full(len(co), ci)),
                              ("co", co), ("ky", ky), ("kx", kx)):
                parts[name].append(np.asarray(col, dtype=np.int64))
            n_c += len(co)
        counts.append(n_c)
    counts = np.array(counts, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    ch = np.arange(C * H * W) // (H * W)
    cat = {name: (np.concatenate(v) if v else np.zeros(0, np.int64)) for name, v in parts.items()}
    return ConvLists(proj=cat["proj"], ci=cat["ci"], co=cat["co"], ky=cat["ky"], kx=cat["kx"],
                     start=np.where(counts[ch] == 0, 0, starts[ch]), count=counts[ch])


# Ordering against membrane-bank conflicts (synapse lanes) ---------------------------------------

def landing_targets(lists: ConvLists, graph: Graph, k: int, bases: np.ndarray,
                    entries: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """The neuron that entry ``entries`` updates when source ``sources`` (flattened index in
    population ``k``) walks it, or -1 where the tap lands outside the output or on another
    stride phase: the core's check (docs/architecture.md, section 5), broadcast over the two
    index arrays. ``bases[e]`` is entry ``e``'s stored target (``NBASE_dst + co*H_out*W_out``)."""
    projs = list(graph.outgoing(k))
    _, H, W = graph.shape(k)
    geo = np.array([(p.padding[0], p.padding[1], p.stride[0], p.stride[1],
                     graph.shape(p.dst)[1], graph.shape(p.dst)[2]) for p in projs], np.int64)
    pad_y, pad_x, s_y, s_x, ho, wo = np.moveaxis(geo[lists.proj[entries]], -1, 0)
    sources = np.asarray(sources)
    ny = (sources // W) % H + pad_y - lists.ky[entries]
    nx = sources % W + pad_x - lists.kx[entries]
    qy, qx = ny // s_y, nx // s_x
    ok = (ny >= 0) & (nx >= 0) & (ny % s_y == 0) & (nx % s_x == 0) & (qy < ho) & (qx < wo)
    return np.where(ok, bases[entries] + qy * wo + qx, -1)


def bank_stalls(lists: ConvLists, graph: Graph, k: int, bases: np.ndarray, bank_of,
                lanes: int) -> np.ndarray:
    """Per source of population ``k``: the bank-conflict stall cycles of one walk of its slice
    on ``lanes`` lanes (per issue of ``lanes`` consecutive entries, the most landing targets in
    one membrane bank ``bank_of(neuron)``, less one), as the core and its cycle model count
    them."""
    count = lists.count
    src = np.repeat(np.arange(len(count)), count)
    pos = np.arange(len(src)) - np.repeat(np.cumsum(count) - count, count)
    tgt = landing_targets(lists, graph, k, bases, lists.start[src] + pos, src)
    hit = tgt >= 0
    return issue_stalls(src[hit], pos[hit], bank_of(tgt[hit]), len(count), lanes)


def order_for_banks(lists: ConvLists, graph: Graph, k: int, bases: np.ndarray, bank_of,
                    lanes: int) -> np.ndarray:
    """An order of the entries of ``lists`` (population ``k``'s) that the sources walk with few
    membrane-bank conflicts on ``lanes`` lanes; returns the permutation.

    A convolution target depends on the source's coordinates, so the cost of an order is the sum
    over every source of the stalls of its own walk (:func:`bank_stalls`), each source with its
    own issue boundaries (its slice's start). The order only moves entries inside a *group*: a
    run of entries of one channel, projection and kernel row that every slice covers whole or
    not at all, so every slice keeps its entries. Position by position, it takes the group's
    entry that adds the fewest stall cycles over the sources walking the group (given the
    entries already in each source's current issue), on ties the one whose banks hold the most
    entries still to place (the fullest banks first, as the dense order does), then the earliest.
    The input order is kept when it is as cheap.
    """
    n, L = lists.n_entries, lanes
    perm = np.arange(n)
    if L == 1 or n <= 1:
        return perm
    start, count = lists.start, lists.count
    walking = np.flatnonzero(count > 0)
    s_start, s_end = start[walking], start[walking] + count[walking]
    key = np.stack([lists.ci, lists.proj, lists.ky])
    cuts = np.unique(np.concatenate([[0, n], s_start, s_end,
                                     np.flatnonzero((key[:, 1:] != key[:, :-1]).any(axis=0)) + 1]))
    win_at = np.full(len(count), -1, np.int64)        # each source's current issue ...
    win_cnt = np.zeros((len(count), L), np.int64)     # ... and its landing entries per bank
    for a, b in zip(cuts[:-1], cuts[1:]):
        cover = walking[(s_start <= a) & (s_end >= b)]
        if len(cover) == 0:
            continue
        tgt = landing_targets(lists, graph, k, bases, np.arange(a, b)[:, None], cover[None, :])
        bank = np.where(tgt >= 0, bank_of(np.maximum(tgt, 0)), -1)     # (entry, source)
        lands = bank >= 0
        sidx = np.arange(len(cover))
        rem = np.zeros((len(cover), L), np.int64)
        np.add.at(rem, (np.broadcast_to(sidx, bank.shape)[lands], bank[lands]), 1)
        left = np.arange(b - a)
        for j in range(a, b):
            w = (j - start[cover]) // L
            fresh = win_at[cover] != w
            win_at[cover[fresh]] = w[fresh]
            win_cnt[cover[fresh]] = 0
            cnt = win_cnt[cover]
            top = np.maximum(cnt.max(axis=1), 1)
            bl, ok = np.maximum(bank[left], 0), lands[left]
            adds = (ok & (cnt[sidx, bl] + 1 > top)).sum(axis=1)
            need = np.where(ok, rem[sidx, bl], 0).sum(axis=1)
            pick = np.lexsort((left, -need, adds))[0]
            e = left[pick]
            left = np.delete(left, pick)
            perm[j] = a + e
            hit = lands[e]
            win_cnt[cover[hit], bank[e, hit]] += 1
            rem[sidx[hit], bank[e, hit]] -= 1
    before = bank_stalls(lists, graph, k, bases, bank_of, L).sum()
    after = bank_stalls(lists.permuted(perm), graph, k, bases[perm], bank_of, L).sum()
    return perm if after < before else np.arange(n)
