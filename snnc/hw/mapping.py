"""Map a verified :class:`snnc.ir.Graph` onto one tile: memory images and parameter registers.

Layout (see docs/architecture.md, "Memories"):

- neurons of populations 1..K-1 are numbered consecutively (``nbase``); the membrane and bias
  memories are indexed by this global neuron number;
- sources (the input population, then every spiking population) are numbered consecutively
  (``sbase``); the pointer memory holds, per source, ``start`` (relative to the population's
  fan-out region) and ``count``;
- each source population's fan-out region holds its nonzero synapses, source by source, in
  target order: the target memory stores the global target neuron, the weight memory stores the
  weights packed ``8 // bits`` per byte (lane ``e % lanes`` at bits ``[bits*lane, bits*lane+bits)``).

With ``lanes`` synapse lanes (:attr:`CoreParams.lanes`, ``L``) each fan-out region starts at a
multiple of ``L`` entries, each bank ``b`` of the weight memory packs the region's entries
``b, b + L, b + 2L, ...`` (bank-local byte ``j`` of bank ``b`` at image address ``j * L + b``),
and every dense list is ordered so that each issue of ``L`` consecutive entries hits as few
entries per membrane bank as it can (:func:`order_for_banks`); so is every convolution list,
against the conflicts of all the sources that walk it
(:func:`snnc.hw.convlists.order_for_banks`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..ir import Graph, required_state_bits, verify
from ..ir import Conv, MaxPool
from .convlists import DEFAULT_CONV_LISTS, conv_lists
from .convlists import order_for_banks as order_conv_for_banks
from .params import (MEMBER_BITS, CfgSel, ConvField, CoreParams, ParamField, SourceMode,
                     bits_for)

__all__ = ["MappingError", "CoreImage", "ArrayImage", "map_graph", "input_fed", "core_params_for", "config_writes",
           "write_hardware", "check_fits", "clear_length", "recip", "WSHIFT", "order_for_banks",
           "pack_banked"]

#: log2(weights per 8-bit word) per weight width.
WSHIFT = {8: 0, 4: 1, 2: 2}


class MappingError(ValueError):
    """The network cannot be mapped onto the core (too large, or mixed widths per source)."""


@dataclass(frozen=True, eq=False)
class CoreImage:
    """Everything the core loads for one network, plus what the cycle model needs.

    ``pops[k]`` maps :class:`ParamField` names to integers. Per global source ``g``:
    ``ptr_start/ptr_count`` (its entry list, relative to its population's region) and
    ``ptr_y/ptr_x`` (its coordinates, for convolution sources). Per synapse entry:
    ``tgt`` (target neuron, or output-channel base for a convolution, or max-pool window),
    ``tgt_ky/tgt_kx`` (kernel tap, or the max-pool member as ``ky * 8 + kx``) and ``tgt_conv``.
    ``convs[j]`` is the geometry of convolution ``j`` (pads, strides, output size).
    ``input_fed`` is the number of global neurons up to the end of the last population the input
    feeds: the input-current memory a core that walks the input once needs (the IR never pools
    the input, so its events always go to membranes).
    """
    pops: tuple
    ptr_start: np.ndarray
    ptr_count: np.ndarray
    ptr_y: np.ndarray
    ptr_x: np.ndarray
    tgt: np.ndarray
    tgt_ky: np.ndarray
    tgt_kx: np.ndarray
    tgt_conv: np.ndarray
    wgt: np.ndarray
    bias: np.ndarray
    convs: tuple
    n_neurons: int
    n_sources: int
    n_entries: int
    n_words: int
    n_pops: int
    pop_sizes: tuple
    max_strength: int
    state_bits: int
    max_side: int
    pool_strength: int
    input_fed: int = 0
    lanes: int = 1
    bank_skew: int = 0
    #: A tile's image (:func:`snnc.compiler.tilemap.map_tiles`): the size of its part of each
    #: population (0: none); ``pop_sizes`` are then the whole populations, whose spikes it receives.
    part_sizes: tuple | None = None
    #: A tile's image: per population, the sources ``(a, b)`` its pointer memory holds (the parts
    #: of the tiles that send to it); the record's ``SBASE`` is then the pointer of source 0, so
    #: ``SBASE + a`` is that of source ``a`` (``SBASE`` may be negative: the core adds modulo its
    #: source address width). None: every population whole (a single core).
    windows: tuple | None = None

    def source_window(self, k: int) -> tuple[int, int]:
        """The sources ``(a, b)`` of population ``k`` the pointer memory holds."""
        return self.windows[k] if self.windows is not None else (0, self.pop_sizes[k])

    @property
    def fanout(self) -> np.ndarray:
        return self.ptr_count

    @property
    def n_convs(self) -> int:
        return len(self.convs)

    @property
    def has_pool(self) -> bool:
        return any(p["GATE"] for p in self.pops)

    def ptr_words(self, params: CoreParams) -> np.ndarray:
        a, c, cb = params.syn_addr_bits, params.count_bits, params.coord_bits
        return (self.ptr_start | (self.ptr_count << a) | (self.ptr_y << (a + c))
                | (self.ptr_x << (a + c + cb)))

    def tgt_words(self, params: CoreParams) -> np.ndarray:
        n = params.neuron_addr_bits
        return self.tgt | (self.tgt_ky << n) | (self.tgt_kx << (n + 3)) | (self.tgt_conv << (n + 6))

    def needs(self, timesteps: int) -> dict:
        if self.part_sizes is not None:
            need = self._needs(timesteps)
            return dict(need, sources=max(1, self.n_sources),
                        **{"population size": max(self.part_sizes[1:] + (1,))})
        return self._needs(timesteps)

    def _needs(self, timesteps: int) -> dict:
        return {"neurons": self.n_neurons, "sources": max(self.n_sources, self.pop_sizes[0]),
                "synapses": max(self.n_entries, self.n_words), "weight words": self.n_words,
                "max-pool sources": self.n_sources if self.has_pool else 0,
                "populations": self.n_pops,
                "population size": max(self.pop_sizes[1:]), "state bits": self.state_bits,
                "spike strength": self.max_strength, "convolutions": len(self.convs),
                "feature map side": self.max_side,
                "max-pool count (timesteps x s_max)": timesteps * self.pool_strength}


@dataclass(frozen=True, eq=False)
class ArrayImage:
    """A network laid out on a ``cols`` x ``rows`` array of tiles
    (:func:`snnc.compiler.tilemap.map_tiles`; docs/architecture.md, "Tiles").

    ``tiles[t]`` is tile ``t``'s :class:`CoreImage` (its parts' neurons numbered from 0, the
    sources of the populations it receives, each population's whole range). ``parts[t][k]`` is
    ``(lo, hi)``: the neurons of population ``k`` on tile ``t`` (``lo == hi``: none).
    ``dst[t][k]`` has bit ``r`` set when tile ``t``'s spikes of population ``k`` go to tile ``r``
    (``dst[t][0]``, the same in every tile: the tiles the host's inputs go to).
    """
    tiles: tuple
    parts: tuple
    dst: tuple
    cols: int
    rows: int
    pop_sizes: tuple

    @property
    def n_tiles(self) -> int:
        return len(self.tiles)

    @property
    def n_pops(self) -> int:
        return len(self.pop_sizes)

    @property
    def all_tiles(self) -> int:
        return (1 << self.n_tiles) - 1

    def receives(self, t: int, k: int) -> bool:
        """Tile ``t`` receives events of population ``k``."""
        return any(d[k] >> t & 1 for d in self.dst)


def _pack(weights: np.ndarray, bits: int) -> np.ndarray:
    lanes = 8 // bits
    n = len(weights)
    words = np.zeros((n + lanes - 1) // lanes, dtype=np.int64)
    mask = (1 << bits) - 1
    for lane in range(lanes):
        part = weights[lane::lanes] & mask
        words[:len(part)] |= part << (bits * lane)
    return words


def pack_banked(weights: np.ndarray, bits: int, lanes: int) -> np.ndarray:
    """A fan-out region's weights as ``lanes`` banks, interleaved byte by byte: bank ``b`` packs
    entries ``b, b + lanes, ...`` as :func:`_pack` does, its byte ``j`` at index
    ``j * lanes + b`` (``lanes = 1``: :func:`_pack` itself)."""
    if lanes == 1:
        return _pack(weights, bits)
    rows = -(-len(weights) // lanes)
    per_bank = -(-rows // (8 // bits))
    out = np.zeros(per_bank * lanes, dtype=np.int64)
    for b in range(lanes):
        part = _pack(weights[b::lanes], bits)
        out[b:b + lanes * len(part):lanes] = part
    return out


def _issue_cost(banks: np.ndarray, lanes: int) -> int:
    """Cycles the walk of entries with membrane ``banks`` takes, in this order: per issue of
    ``lanes`` entries, the most entries of one bank (at least 1)."""
    return sum(max(1, int(np.bincount(banks[i:i + lanes], minlength=lanes).max()))
               for i in range(0, len(banks), lanes))


def order_for_banks(targets: np.ndarray, lanes: int) -> np.ndarray:
    """An order of one event's entries that the lanes walk in as
    few cycles as the banks allow. The walk takes at least ``M = max(issues, largest bank)``
    cycles; the order gives issue ``g`` a cap ``m_g`` (the caps add up to ``M``) and fills it
    round by round with one entry of each bank below its cap, the fullest banks first, raising
    the cap only when no bank is left below it. The input order is kept when it is as cheap.
    ``targets`` are the entries' membrane banks, or their target neurons when the bank is the
    neuron's low bits (``bank_skew = 0``). Returns the permutation."""
    targets = np.asarray(targets)
    n = len(targets)
    if lanes == 1 or n <= 1:
        return np.arange(n)
    banks = targets & (lanes - 1)
    left = [list(np.flatnonzero(banks == b)[::-1]) for b in range(lanes)]
    groups = -(-n // lanes)
    most = max(groups, max(len(q) for q in left))
    order = []
    for g in range(groups):
        size = min(lanes, n - len(order))
        cap = most // groups + (g < most % groups)
        took = [0] * lanes
        while size:
            ready = [b for b in sorted(range(lanes), key=lambda b: -len(left[b]))
                     if left[b] and took[b] < cap]
            if not ready:
                cap += 1
                continue
            for b in ready[:size]:
                order.append(left[b].pop())
                took[b] += 1
                size -= 1
    order = np.array(order, dtype=np.int64)
    if _issue_cost(banks, lanes) <= _issue_cost(banks[order], lanes):
        return np.arange(n)
    return order


def _source_mode(graph: Graph, k: int) -> SourceMode:
    out = graph.outgoing(k)
    kinds = {type(p) for p in out}
    name = graph.pop(k).name
    if MaxPool in kinds:
        if len(out) > 1:
            raise MappingError(f"population {k} ('{name}') feeds a max-pool and other layers; "
                               "a max-pool's source must feed only the max-pool")
        return SourceMode.POOL
    if len(kinds) > 1:
        raise MappingError(f"population {k} ('{name}') feeds both dense and convolution "
                           "projections; one tile addresses a source population one way")
    return SourceMode.CONV if Conv in kinds else SourceMode.DENSE


def _dense_entries(graph, k, nbase):
    src_i, tgt_g, w = [], [], []
    for proj in graph.outgoing(k):
        j, i = np.nonzero(proj.weights)
        src_i.append(i)
        tgt_g.append(j + nbase[proj.dst])
        w.append(proj.weights[j, i])
    if not src_i:
        z = np.zeros(0, np.int64)
        return z, z, z
    src_i, tgt_g, w = (np.concatenate(a).astype(np.int64) for a in (src_i, tgt_g, w))
    order = np.lexsort((tgt_g, src_i))
    return src_i[order], tgt_g[order], w[order]


def input_fed(graph: Graph) -> int:
    """:attr:`CoreImage.input_fed`: global neurons up to the end of the last population the
    input feeds (populations 1.. are numbered consecutively from 0)."""
    nbase = np.cumsum([0] + [graph.size(k) for k in range(1, graph.n_pops)])
    return max((int(nbase[p.dst - 1]) + graph.size(p.dst) for p in graph.outgoing(0)), default=0)


def map_graph(graph: Graph, conv_layout: str = DEFAULT_CONV_LISTS, lanes: int = 1,
              bank_skew: int = 0) -> CoreImage:
    """Lay ``graph`` out in the core's memories (independent of any core's capacity).

    ``conv_layout`` is how convolution taps are listed (:mod:`snnc.hw.convlists`); ``lanes``
    and ``bank_skew`` the synapse lanes and the membrane-bank function of the core it is for
    (:class:`CoreParams`).
    """
    if lanes not in (1, 2, 4, 8):
        raise MappingError(f"lanes must be 1, 2, 4 or 8, not {lanes!r}")
    banking = CoreParams(lanes=lanes, bank_skew=bank_skew)
    verify(graph)
    K = graph.n_pops
    nbase, n = [0] * K, 0
    for k in range(1, K):
        nbase[k], n = n, n + graph.size(k)
    is_source = [k == 0 or graph.pop(k).spiking for k in range(K)]
    sbase, s = [0] * K, 0
    for k in range(K):
        if is_source[k]:
            sbase[k], s = s, s + graph.size(k)
    conv_ids = {}
    convs = []
    for proj in graph.projections:
        if isinstance(proj, Conv):
            conv_ids[(proj.src, proj.dst)] = len(convs)
            _, ho, wo = graph.shape(proj.dst)
            convs.append({"PAD_Y": proj.padding[0], "PAD_X": proj.padding[1],
                          "STRIDE_Y": proj.stride[0], "STRIDE_X": proj.stride[1],
                          "OUT_H": ho, "OUT_W": wo})
    cols = {name: [] for name in ("start", "count", "y", "x", "tgt", "ky", "kx", "conv", "wgt")}
    tbase, wbase, wshift, smode = [0] * K, [0] * K, [0] * K, [0] * K
    entries = words = 0
    for k in range(K):
        if not is_source[k]:
            continue
        mode = _source_mode(graph, k)
        out = graph.outgoing(k)
        widths = {p.bits for p in out if not isinstance(p, MaxPool)}
        if len(widths) > 1:
            raise MappingError(f"population {k} ('{graph.pop(k).name}') feeds projections with "
                               f"different weight widths {sorted(widths)}; one tile stores one "
                               "width per source population")
        bits = widths.pop() if widths else 8
        size = graph.size(k)
        ys = xs = np.zeros(size, np.int64)
        if len(graph.shape(k)) == 3:
            c, h, w_ = graph.shape(k)
            idx = np.arange(size)
            ys, xs = (idx // w_) % h, idx % w_
        ky = kx = conv = np.zeros(0, np.int64)
        if mode is SourceMode.DENSE:
            src_i, tgt, w = _dense_entries(graph, k, nbase)
            cnt = np.bincount(src_i, minlength=size).astype(np.int64)
            start = np.concatenate([[0], np.cumsum(cnt)[:-1]]).astype(np.int64)
            if lanes > 1:
                for a, c in zip(start, cnt):
                    perm = a + order_for_banks(banking.neuron_bank(tgt[a:a + c]), lanes)
                    tgt[a:a + c], w[a:a + c] = tgt[perm], w[perm]
            ky = kx = conv = np.zeros(len(tgt), np.int64)
        elif mode is SourceMode.CONV:
            lists = conv_lists(graph, k, conv_layout)
            dst_base = np.array([nbase[p.dst] for p in out], dtype=np.int64)
            plane = np.array([graph.shape(p.dst)[1] * graph.shape(p.dst)[2] for p in out],
                             dtype=np.int64)
            ids = np.array([conv_ids[(p.src, p.dst)] for p in out], dtype=np.int64)
            if lanes > 1:
                bases = dst_base[lists.proj] + lists.co * plane[lists.proj]
                lists = lists.permuted(order_conv_for_banks(lists, graph, k, bases,
                                                            banking.neuron_bank, lanes))
            tgt = dst_base[lists.proj] + lists.co * plane[lists.proj]
            ky, kx, conv = lists.ky, lists.kx, ids[lists.proj]
            w = np.zeros(lists.n_entries, dtype=np.int64)
            for pi, p in enumerate(out):
                sel = lists.proj == pi
                w[sel] = p.weights[lists.co[sel], lists.ci[sel], ky[sel], kx[sel]]
            start, cnt = lists.start, lists.count
        else:
            (proj,) = out
            kk = proj.kernel
            c, h, w_ = graph.shape(k)
            _, ho, wo = graph.shape(proj.dst)
            idx = np.arange(size)
            inside = (ys < ho * kk) & (xs < wo * kk)
            ch = idx // (h * w_)
            win = (ch * ho + ys // kk) * wo + xs // kk
            member = (ys % kk) * kk + xs % kk
            cnt = inside.astype(np.int64)
            start = np.concatenate([[0], np.cumsum(cnt)[:-1]]).astype(np.int64)
            tgt = (nbase[proj.dst] + win[inside]).astype(np.int64)
            ky, kx = member[inside] // 8, member[inside] % 8
            conv = np.zeros(len(tgt), np.int64)
            w = np.zeros(0, np.int64)
        packed = pack_banked(w, bits, lanes)
        pad = -len(tgt) % lanes         # the next region starts on a multiple of lanes
        if pad:
            z = np.zeros(pad, np.int64)
            tgt, ky, kx, conv = (np.concatenate([np.asarray(a, np.int64), z])
                                 for a in (tgt, ky, kx, conv))
        tbase[k], wbase[k], wshift[k], smode[k] = entries, words // lanes, WSHIFT[bits], int(mode)
        for name, col in (("start", start), ("count", cnt), ("y", ys), ("x", xs), ("tgt", tgt),
                          ("ky", ky), ("kx", kx), ("conv", conv), ("wgt", packed)):
            cols[name].append(np.asarray(col, dtype=np.int64))
        entries += len(tgt)
        words += len(packed)
    pops = []
    for k in range(K):
        p = graph.pop(k)
        neuron = k > 0
        pops.append({
            "NBASE": nbase[k], "SIZE": graph.size(k), "SBASE": sbase[k], "TBASE": tbase[k],
            "WBASE": wbase[k], "WSHIFT": wshift[k],
            "THETA": p.theta if neuron else 1, "SMAX": p.s_max if neuron else 1,
            "VMIN": p.v_min if neuron else 0, "VMAX": p.v_max if neuron else 0,
            "SPIKING": int(p.spiking) if neuron else 0,
            "SMAX_THETA": p.s_max * p.theta if neuron else 1,
            "SMODE": smode[k], "GATE": int(neuron and p.maxpool),
        })
    cat = {name: (np.concatenate(v) if v else np.zeros(0, np.int64)) for name, v in cols.items()}
    bias = np.concatenate([p.bias for p in graph.populations]).astype(np.int64)
    sides = [d for k in range(K) if len(graph.shape(k)) == 3 for d in graph.shape(k)[1:]]
    pools = [graph.pop(k).s_max for k in range(1, K) if graph.pop(k).maxpool]
    # A source without synapses has no list: its start is 0, not the end of its population's
    # region, which can equal max_synapses and not fit the pointer's start field.
    start = np.where(cat["count"] == 0, 0, cat["start"]).astype(np.int64)
    return CoreImage(
        pops=tuple(pops), ptr_start=start, ptr_count=cat["count"], ptr_y=cat["y"],
        ptr_x=cat["x"], tgt=cat["tgt"], tgt_ky=cat["ky"], tgt_kx=cat["kx"], tgt_conv=cat["conv"],
        wgt=cat["wgt"], bias=bias, convs=tuple(convs),
        n_neurons=n, n_sources=s, n_entries=entries, n_words=words, n_pops=K,
        pop_sizes=tuple(graph.size(k) for k in range(K)),
        max_strength=max(p.s_max for p in graph.populations),
        state_bits=required_state_bits(graph), max_side=max(sides, default=1),
        pool_strength=max(pools, default=0), input_fed=input_fed(graph), lanes=lanes,
        bank_skew=bank_skew)


def _gate_bits(image: CoreImage, params: CoreParams) -> int:
    return params.gate_bits + 1 if image.has_pool else 0


def core_params_for(image: CoreImage, *, timesteps: int = 1, input_once: bool = False,
                    **overrides) -> CoreParams:
    """The smallest core that holds ``image`` (capacities may be raised with ``overrides``).

    ``image`` is a :class:`CoreImage` or anything with its counts (a
    :class:`snnc.compiler.budget.Footprint`). With ``input_once`` the core walks the input once
    per inference (an input-current memory for the neurons the input feeds), when the network
    feeds any neuron (:attr:`CoreImage.input_fed` > 0).
    """
    strength_bits = bits_for(image.max_strength)
    pool_bits = bits_for(max(1, timesteps * image.pool_strength))
    fields = dict(
        max_neurons=max(1, image.n_neurons), max_sources=max(1, image.n_sources, image.pop_sizes[0]),
        max_synapses=max(1, image.n_entries, image.n_words), max_pops=max(2, image.n_pops),
        max_weight_words=max(1, image.n_words),
        max_pool_sources=max(1, image.n_sources) if image.has_pool else 1,
        max_pop_size=max(image.pop_sizes[1:]), strength_bits=strength_bits,
        max_convs=max(1, image.n_convs), coord_bits=bits_for(max(1, image.max_side - 1)),
        pool_count_bits=pool_bits,
        input_current_depth=image.input_fed if input_once else 0,
        lanes=getattr(image, "lanes", 1), bank_skew=getattr(image, "bank_skew", 0),
        v_bits=max(4, image.state_bits,
                   (pool_bits + MEMBER_BITS + strength_bits + 1) if image.has_pool else 0))
    fields.update(overrides)
    return CoreParams(**fields)


def check_fits(image: CoreImage, params: CoreParams, timesteps: int = 1) -> None:
    """Raise :class:`MappingError` naming every limit ``image`` exceeds on ``params``."""
    problems = params.fits(image.needs(timesteps))
    if (image.lanes, image.bank_skew) != (params.lanes, params.bank_skew):
        problems.append(f"synapse lanes: the images are mapped for {image.lanes} lanes and bank "
                        f"skew {image.bank_skew}, the core has {params.lanes} and "
                        f"{params.bank_skew} (map the network with lanes={params.lanes}, "
                        f"bank_skew={params.bank_skew})")
    if params.input_once and image.input_fed > params.input_current_depth:
        problems.append(f"input-current neurons: the input feeds neurons up to {image.input_fed}, "
                        f"the core holds {params.input_current_depth}")
    if image.has_pool and params.v_bits < params.gate_bits + 1:
        problems.append(f"state bits: a max-pool gate needs {params.gate_bits + 1}, the core "
                        f"holds {params.v_bits}")
    for j, cv in enumerate(image.convs):
        if max(cv["STRIDE_Y"], cv["STRIDE_X"]) > 7:
            problems.append(f"convolution {j}: stride {cv['STRIDE_Y']}x{cv['STRIDE_X']} exceeds 7")
    if problems:
        raise MappingError("the network does not fit the core: " + "; ".join(problems) +
                           ". Prune more, use fewer/smaller layers, or build a larger core.")


def recip(stride: int, params: CoreParams) -> int:
    """Multiplier with ``(n * recip) >> recip_shift == n // stride`` for every coordinate ``n``."""
    return -(-(1 << params.recip_shift) // stride)


def _twos(value: int, bits: int) -> int:
    return int(value) & ((1 << bits) - 1)


def config_writes(image: CoreImage, params: CoreParams, timesteps: int) -> list[tuple[int, int, int]]:
    """The ``(cfg_sel, cfg_addr, cfg_data)`` writes that load ``image`` into a core."""
    check_fits(image, params, timesteps)
    vb = params.v_bits
    writes = [(CfgSel.PTR, a, int(d)) for a, d in enumerate(image.ptr_words(params))]
    writes += [(CfgSel.TGT, a, int(d)) for a, d in enumerate(image.tgt_words(params))]
    writes += [(CfgSel.WGT, a, int(d)) for a, d in enumerate(image.wgt)]
    writes += [(CfgSel.BIAS, a, _twos(d, vb)) for a, d in enumerate(image.bias)]
    for k, pop in enumerate(image.pops):
        for f in ParamField:
            value = pop[f.name]
            # Only the clamp bounds are signed (v_bits two's complement); the other fields are
            # addresses, sizes and flags written as they are.
            writes.append((CfgSel.PARAM, k * 16 + f, _param_word(f, value, params)))
    for j, cv in enumerate(image.convs):
        regs = dict(cv, RECIP_Y=recip(cv["STRIDE_Y"], params), RECIP_X=recip(cv["STRIDE_X"], params))
        writes += [(CfgSel.CONV, j * 16 + f, regs[f.name]) for f in ConvField]
    writes += [(CfgSel.GLOBAL, 0, image.n_pops), (CfgSel.GLOBAL, 1, int(timesteps)),
               (CfgSel.GLOBAL, 2, clear_length(image))]
    return [(int(s), int(a), int(d)) for s, a, d in writes]


def _param_word(field: ParamField, value: int, params: CoreParams) -> int:
    """A record field as the configuration port takes it: the clamp bounds in ``v_bits`` two's
    complement, ``SBASE`` modulo the source address width (a tile's may be negative), the other
    fields (addresses, sizes, flags) as they are."""
    if field in (ParamField.VMIN, ParamField.VMAX):
        return _twos(value, params.v_bits)
    if field == ParamField.SBASE:
        return _twos(value, params.source_addr_bits)
    return int(value)


def clear_length(image: CoreImage) -> int:
    """Words the clear sweep zeroes: every membrane and every max-pool member count."""
    return max(image.n_neurons, image.n_sources if image.has_pool else 0)


#: Rows formatted per block by :func:`_hex` (bounds its scratch memory to a few tens of MB).
_HEX_BLOCK = 1 << 18


def _hex(path: Path, values, bits: int) -> None:
    """One ``bits``-bit two's-complement word per line, ``ceil(bits / 4)`` lowercase hex digits.

    Formatted with numpy (no Python string per word): the same bytes as
    ``f"{_twos(v, bits):0{digits}x}\\n"`` for each value.
    """
    digits = max(1, (bits + 3) // 4)
    if bits > 64:                                     # beyond numpy's integers: plain Python
        path.write_text("".join(f"{_twos(v, bits):0{digits}x}\n" for v in values))
        return
    words = np.asarray(values, dtype=np.int64).reshape(-1).astype(np.uint64)
    if bits < 64:
        words &= np.uint64((1 << bits) - 1)
    alphabet = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    shifts = np.arange(4 * (digits - 1), -1, -4, dtype=np.uint64)
    with open(path, "wb") as f:
        for start in range(0, len(words), _HEX_BLOCK):
            block = words[start:start + _HEX_BLOCK]
            text = np.empty((len(block), digits + 1), dtype=np.uint8)
            text[:, :digits] = alphabet[((block[:, None] >> shifts) & np.uint64(15)).astype(np.intp)]
            text[:, digits] = ord("\n")
            f.write(text.tobytes())


def write_hardware(out_dir, graph: Graph, conv_layout: str = DEFAULT_CONV_LISTS, *,
                   input_once: bool = True, lanes: int = 1, bank_skew: int = 0) -> dict:
    """Write ``core.v`` (a core sized for ``graph``, walking the input once per inference when
    ``input_once`` and the network allows it, with ``lanes`` synapse lanes) and the memory
    images; return the config."""
    from amaranth.back import verilog
    from .core import Core

    out = Path(out_dir)
    image = map_graph(graph, conv_layout, lanes, bank_skew)
    params = core_params_for(image, timesteps=graph.timesteps, input_once=input_once)
    memories = write_images(out, "mem", image, params)
    core = Core(params)
    (out / "core.v").write_text(verilog.convert(core, name="snnc_core"))
    cfg = {name: getattr(params, name) for name in params.__dataclass_fields__}
    return {"params": cfg, "top": "snnc_core", "verilog": "core.v", "conv_lists": conv_layout,
            "memories": memories, "usage": image_usage(image, params)}


def image_usage(image: CoreImage, params: CoreParams) -> dict:
    """What ``image`` occupies (the manifest's ``usage``)."""
    return {"neurons": image.n_neurons, "sources": image.n_sources,
            "synapse_entries": image.n_entries, "weight_words": image.n_words,
            "memory_bits": memory_bits(image, params)}


def write_images(root, rel: str, image: CoreImage, params: CoreParams) -> dict:
    """Write ``image``'s memory files for a core built from ``params`` under ``root / rel``;
    return their paths relative to ``root`` (the manifest's ``memories``)."""
    mem = Path(root) / rel
    mem.mkdir(parents=True, exist_ok=True)
    _hex(mem / "ptr.hex", image.ptr_words(params), params.ptr_bits)
    _hex(mem / "tgt.hex", image.tgt_words(params), params.tgt_bits)
    _hex(mem / "wgt.hex", image.wgt, 8)
    _hex(mem / "bias.hex", image.bias, params.v_bits)
    (mem / "params.json").write_text(json.dumps(
        {"populations": list(image.pops), "convolutions": list(image.convs),
         "n_pops": image.n_pops, "n_neurons": image.n_neurons,
         "clear_length": clear_length(image)}, indent=1) + "\n")
    return {name: f"{rel}/{name}.{'json' if name == 'params' else 'hex'}"
            for name in ("ptr", "tgt", "wgt", "bias", "params")}


def memory_bits(image: CoreImage, params: CoreParams) -> dict:
    """Bits of each memory the network occupies (used entries times word width)."""
    return {"ptr": image.n_sources * params.ptr_bits,
            "tgt": image.n_entries * params.tgt_bits,
            "wgt": image.n_words * 8,
            "bias": image.n_neurons * params.v_bits,
            "vmem": image.n_neurons * params.v_bits,
            "pool_count": image.n_sources * params.pool_count_bits if image.has_pool else 0,
            "spike_buffer": max(image.pop_sizes[1:]) * (params.source_addr_bits + params.strength_bits),
            "input_current": params.input_current_depth * params.v_bits}
