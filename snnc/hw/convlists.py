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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Conv, Graph

__all__ = ["CONV_LISTS", "DEFAULT_CONV_LISTS", "ConvLists", "conv_lists", "check_layout",
           "landing_taps"]

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
