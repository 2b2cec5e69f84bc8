"""Spread a network over a mesh of fixed-capacity tiles: the shipped targets, the partition, and
what each tile must hold (a pure compiler pass; docs/architecture.md, "Tiles").

A *target* is a mesh shape and one tile size (:class:`TileTarget`, :data:`TARGETS`); a tile size
is a :class:`~snnc.hw.params.CoreParams` whose capacities are fixed, not fitted to a network.

:func:`partition` splits every population into contiguous parts, by output channel for a feature
map (a convolution split by output channel keeps its kernel-addressed lists: no unrolling) and by
neuron otherwise, and places the parts on tiles. Objective (documented in docs/architecture.md):
the layers run one after another within a timestep, so a layer's time is its slowest tile's;
each population is spread over as many tiles as it has units (at most all of them), cut so the
parts carry equal work (incoming synapse entries walked, plus the sweep), and the parts of
successive populations start on successive tiles so that memory use spreads too. The placement
is deterministic.

:func:`tile_needs` counts what one tile holds with destination-side storage: its parts' neurons,
for every population that feeds them the pointers of a window of its sources (from the first to
the last part whose tile may send it spikes: spikes arrive by multicast with their population's
own source index), and the synapse entries and weight words of those sources that land on its
parts (convolution lists by class, restricted to its output channels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..hw.convlists import DEFAULT_CONV_LISTS, conv_lists
from ..hw.params import CoreParams, MeshParams
from ..ir import Conv, Dense, Graph, MaxPool
from .errors import SnncError

__all__ = ["TileTarget", "TILE_SIZES", "TARGETS", "Part", "Partition", "partition",
           "tile_needs", "tile_view", "target_for_tiles", "smallest_fitting", "TilingError"]


class TilingError(SnncError):
    """The network does not fit the target's tiles."""


def _size(neurons, sources, synapses, pops, pop_size) -> CoreParams:
    return CoreParams(max_neurons=neurons, max_sources=sources, max_synapses=synapses,
                      max_weight_words=synapses // 2, max_pops=pops, max_pop_size=pop_size,
                      max_pool_sources=sources, max_convs=8, coord_bits=6, v_bits=24,
                      strength_bits=4)


#: Standard tile sizes, smallest first (``--tiles N`` picks the smallest that fits). Weights
#: take half a word per entry (4 bits) at most; 8-bit networks need smaller layers.
TILE_SIZES = {
    "xs": _size(512, 768, 16384, 8, 512),
    "s": _size(1024, 2048, 16384, 8, 1024),
    "m": _size(4096, 8192, 65536, 16, 4096),
    "l": _size(16384, 32768, 262144, 16, 16384),
}


@dataclass(frozen=True)
class TileTarget:
    """A named configuration: ``cols`` x ``rows`` tiles of size ``size`` (:data:`TILE_SIZES`)."""
    name: str
    cols: int
    rows: int
    size: str
    about: str

    @property
    def n_tiles(self) -> int:
        return self.cols * self.rows

    @property
    def tile(self) -> CoreParams:
        return TILE_SIZES[self.size]

    @property
    def mesh(self) -> MeshParams:
        return MeshParams(cols=self.cols, rows=self.rows)


#: The shipped targets, smallest first.
TARGETS = {
    "up5k-1": TileTarget("up5k-1", 1, 1, "xs", "one extra-small tile; its memories fit the "
                         "iCE40UP5K (the synapse memories on SPRAM)"),
    "ecp5-4": TileTarget("ecp5-4", 2, 2, "s", "2 x 2 small tiles; their memories fit the "
                         "ECP5-85F's block RAM"),
    "mesh-16": TileTarget("mesh-16", 4, 4, "m", "4 x 4 medium tiles (simulation and ASIC "
                          "studies; larger than the FPGAs snnc builds for)"),
}


def target_for_tiles(n: int, graph: Graph | None = None,
                     conv_layout: str = DEFAULT_CONV_LISTS) -> TileTarget:
    """``--tiles N``: a near-square mesh of ``n`` tiles of the smallest standard size that holds
    ``graph`` (the largest size when none does, or without a graph)."""
    if not isinstance(n, int) or not 1 <= n <= 64:
        raise TilingError(f"--tiles must be 1..64, not {n!r}")
    cols = next(c for c in range(math.isqrt(n), 0, -1) if n % c == 0)
    cols, rows = max(cols, n // cols), min(cols, n // cols)
    sizes = list(TILE_SIZES)
    for size in sizes:
        t = TileTarget(f"{cols}x{rows}-{size}", cols, rows, size, f"{n} tiles of size {size}")
        if graph is None:
            continue
        if not partition(graph, t, conv_layout, check=False).problems():
            return t
    return TileTarget(f"{cols}x{rows}-{sizes[-1]}", cols, rows, sizes[-1],
                      f"{n} tiles of size {sizes[-1]}")


@dataclass(frozen=True)
class Part:
    """Neurons ``lo .. hi - 1`` of population ``pop`` (a channel range of a feature map, whole
    channels), on tile ``tile``."""
    pop: int
    lo: int
    hi: int
    tile: int

    @property
    def size(self) -> int:
        return self.hi - self.lo


def _units(graph: Graph, k: int) -> tuple[int, int]:
    """(units, neurons per unit) of population ``k``: channels of a feature map, else neurons."""
    shape = graph.shape(k)
    if len(shape) == 3:
        return shape[0], shape[1] * shape[2]
    return graph.size(k), 1


def _unit_work(graph: Graph, k: int) -> np.ndarray:
    """Per unit of population ``k``: entries walked if every source fired once (per output
    channel, a tap's nonzero weight times the output positions), plus its neurons (the sweep)."""
    units, per = _units(graph, k)
    work = np.full(units, per, dtype=np.int64)
    for p in graph.incoming(k):
        if isinstance(p, Dense):
            nz = (p.weights != 0).sum(axis=1)
            work += nz.reshape(units, -1).sum(axis=1) if per > 1 else nz
        elif isinstance(p, Conv):
            work += (p.weights != 0).reshape(units, -1).sum(axis=1) * per
        elif isinstance(p, MaxPool):
            work += p.kernel * p.kernel * per
    return work


def _cuts(work: np.ndarray, parts: int) -> list[int]:
    """``parts + 1`` unit boundaries cutting ``work`` into contiguous runs of about equal sums
    (each run at least one unit)."""
    n = len(work)
    csum = np.concatenate([[0], np.cumsum(work)])
    cuts = [0]
    for i in range(1, parts):
        want = csum[-1] * i / parts
        c = int(np.searchsorted(csum, want))
        if c > 0 and want - csum[c - 1] < csum[c] - want:
            c -= 1
        cuts.append(min(max(c, cuts[-1] + 1), n - (parts - i)))
    cuts.append(n)
    return cuts


@dataclass(frozen=True)
class Partition:
    """The parts of every population and what each tile then holds."""
    target: TileTarget
    parts: tuple[Part, ...]
    needs: tuple[dict, ...]          #: per tile, :func:`tile_needs`
    layers: tuple[dict, ...]         #: per tile, layer name -> synapse entries it stores there
    sources: tuple[tuple[int, ...], ...]   #: per tile, the populations whose spikes it receives

    def problems(self) -> list[str]:
        """Each tile's capacities the partition exceeds (empty when it fits)."""
        out = []
        for t, need in enumerate(self.needs):
            out += [f"tile {t}: {why}" for why in self.target.tile.fits(need)]
        return out

    def on_tile(self, t: int) -> list[Part]:
        return [p for p in self.parts if p.tile == t]

    def longest_route(self) -> int:
        """Routers on the longest path a spike takes: from a tile holding a part of a source
        population to a tile holding one of its targets."""
        mesh = self.target.mesh
        tiles_of = {}
        for p in self.parts:
            tiles_of.setdefault(p.pop, set()).add(p.tile)
        feeds = {}
        for t, srcs in enumerate(self.sources):
            for j in srcs:
                feeds.setdefault(j, set()).add(t)
        longest = 0
        for j, dests in feeds.items():
            for a in tiles_of.get(j, {0}):          # the input enters at tile 0
                longest = max([longest] + [mesh.hops(a, b) for b in dests])
        return longest


def _rows_kept(p, lo: int, hi: int):
    """Projection ``p`` with only its output units ``lo .. hi - 1`` (rows of a dense matrix,
    output channels of a kernel) kept; a max-pool as it is."""
    if isinstance(p, MaxPool):
        return p
    w = np.zeros_like(p.weights)
    w[lo:hi] = p.weights[lo:hi]
    if isinstance(p, Dense):
        return Dense(p.src, p.dst, w, p.bits)
    return Conv(p.src, p.dst, w, p.bits, p.stride, p.padding)


def _relevant_sources(graph: Graph, view: Graph, j: int, local: dict) -> np.ndarray:
    """Which sources of population ``j`` may store an entry on a tile holding ``local`` (a
    superset: a dense source with a weight into its rows, every position of an input channel
    with a tap into its channels, every member of a channel of its max-pool windows)."""
    mask = np.zeros(graph.size(j), dtype=bool)
    for p in view.outgoing(j):
        if p.dst not in local:
            continue
        if isinstance(p, Dense):
            mask |= p.weights.any(axis=0)
        elif isinstance(p, Conv):
            c, h, w = graph.shape(j)
            mask |= np.repeat(p.weights.any(axis=(0, 2, 3)), h * w)
        else:
            _, ho, wo = graph.shape(p.dst)
            c, h, w = graph.shape(j)
            part = local[p.dst]
            lo, hi = part.lo // (ho * wo), -(-part.hi // (ho * wo))
            mask[lo * h * w:hi * h * w] = True
    return mask


def _window(graph: Graph, view: Graph, j: int, local: dict, all_parts) -> int:
    """Sources of ``j`` a tile's pointer memory holds: from the first to the last part (of
    ``all_parts``) holding a relevant source (:func:`snnc.compiler.tilemap.map_tiles` keeps
    those whose sources store an entry there: never more)."""
    if j == 0 or all_parts is None:
        return graph.size(j)
    mask = _relevant_sources(graph, view, j, local)
    spans = [(p.lo, p.hi) for p in all_parts if p.pop == j and mask[p.lo:p.hi].any()]
    return max(hi for _, hi in spans) - min(lo for lo, _ in spans) if spans else 0


def tile_view(graph: Graph, local: dict) -> Graph:
    """``graph`` as a tile holding ``local`` (population -> ``(lo, hi)``) sees it: every
    projection cut to the output rows or channels of the tile's parts (a max-pool as it is)."""
    def kept(p):
        if p.dst not in local:
            return _rows_kept(p, 0, 0)
        per = _units(graph, p.dst)[1] if isinstance(p, Conv) else 1
        lo, hi = local[p.dst]
        return _rows_kept(p, lo // per, hi // per)
    return graph.replace(projections=tuple(kept(p) for p in graph.projections))


def tile_needs(graph: Graph, parts: list[Part], conv_layout: str = DEFAULT_CONV_LISTS,
               all_parts=None) -> tuple[dict, dict, tuple[int, ...]]:
    """What one tile holding ``parts`` needs, by the capacity names of
    :meth:`CoreParams.fits`; the synapse entries it stores per layer name; and the source
    populations whose spikes it receives. With ``all_parts`` (every tile's), a received
    population takes only its window of sources (:func:`_window`), else all of them."""
    local = {p.pop: p for p in parts}
    view = tile_view(graph, {p.pop: (p.lo, p.hi) for p in parts})
    entries = words = 0
    per_layer: dict[str, int] = {}
    sources = set()
    for j in range(graph.n_pops):
        out = [p for p in view.outgoing(j) if p.dst in local]
        if not out:
            continue
        sources.add(j)
        if all(isinstance(p, Conv) for p in view.outgoing(j)):
            lists = conv_lists(view, j, conv_layout)
            per_proj = np.bincount(lists.proj, minlength=len(view.outgoing(j)))
            for p, n in zip(view.outgoing(j), per_proj):
                if n:
                    per_layer[graph.pop(p.dst).name] = per_layer.get(graph.pop(p.dst).name, 0) + int(n)
            entries += lists.n_entries
            words += -(-lists.n_entries // (8 // out[0].bits))
            continue
        weighted, per_word = 0, 1
        for p in out:
            name = graph.pop(p.dst).name
            part = local[p.dst]
            if isinstance(p, MaxPool):
                c, h, w = graph.shape(j)
                _, ho, wo = graph.shape(p.dst)
                kk = p.kernel
                ch, y, x = np.unravel_index(np.arange(c * h * w), (c, h, w))
                inside = (y < ho * kk) & (x < wo * kk)
                win = (ch * ho + y // kk) * wo + x // kk
                n = int((inside & (win >= part.lo) & (win < part.hi)).sum())
            else:
                n = int(np.count_nonzero(p.weights))
                weighted += n
                per_word = 8 // p.bits
            entries += n
            per_layer[name] = per_layer.get(name, 0) + n
        words += -(-weighted // per_word)
    records = set(local) | sources
    need = {"neurons": sum(p.size for p in parts),
            "sources": sum(_window(graph, view, j, local, all_parts) for j in sources),
            "synapses": entries, "weight words": max(1, words),
            "populations": len(records),
            "population size": max([p.size for p in parts] + [1]),
            "convolutions": sum(isinstance(p, Conv) and p.dst in local
                                for p in graph.projections)}
    return need, per_layer, tuple(sorted(sources))


def partition(graph: Graph, target: TileTarget, conv_layout: str = DEFAULT_CONV_LISTS, *,
              check: bool = True) -> Partition:
    """Split and place ``graph`` on ``target`` (module docstring). With ``check`` a network
    that does not fit raises :class:`TilingError`: the tile, the layer that stores the most
    there, each capacity it exceeds against what the tile holds, and the smallest shipped
    target that fits."""
    n = target.n_tiles
    parts = []
    start = 0
    for k in range(1, graph.n_pops):
        units, per = _units(graph, k)
        count = min(n, units)
        cuts = _cuts(_unit_work(graph, k), count)
        for i in range(count):
            parts.append(Part(k, cuts[i] * per, cuts[i + 1] * per, (start + i) % n))
        start = (start + count) % n
    needs, layers, sources = [], [], []
    for t in range(n):
        mine = [p for p in parts if p.tile == t]
        need, per_layer, srcs = tile_needs(graph, mine, conv_layout, parts) if mine else (
            {"neurons": 0, "sources": 0, "synapses": 0, "weight words": 0, "populations": 0,
             "population size": 0, "convolutions": 0}, {}, ())
        needs.append(need)
        layers.append(per_layer)
        sources.append(srcs)
    result = Partition(target, tuple(parts), tuple(needs), tuple(layers), tuple(sources))
    if check and result.problems():
        raise TilingError(_explain(graph, result, conv_layout))
    return result


def smallest_fitting(graph: Graph, conv_layout: str = DEFAULT_CONV_LISTS) -> TileTarget | None:
    """The first shipped target (smallest first) that holds ``graph``, or None."""
    for t in TARGETS.values():
        if not partition(graph, t, conv_layout, check=False).problems():
            return t
    return None


def _explain(graph: Graph, result: Partition, conv_layout: str) -> str:
    tile = result.target.tile
    cap = tile.capacity()

    def load(t):
        return max(result.needs[t][k] / cap[k] for k in result.needs[t])
    worst_t = max(range(len(result.needs)), key=load)
    need = result.needs[worst_t]
    over = [k for k in need if need[k] > cap[k]]
    first = over[0]
    mine = result.on_tile(worst_t)
    if first == "neurons":
        big = max(mine, key=lambda p: p.size)
        where = f"layer '{graph.pop(big.pop).name}' puts {big.size:,} neurons there"
    elif first in ("synapses", "weight words"):
        name, n = max(result.layers[worst_t].items(), key=lambda kv: kv[1])
        where = f"layer '{name}' stores {n:,} synapse entries there"
    elif first in ("sources", "population size"):
        j = max(result.sources[worst_t], key=graph.size)
        where = (f"its parts receive the spikes of '{graph.pop(j).name}' "
                 f"({graph.size(j):,} sources) and every other population feeding them")
    else:
        where = f"it holds parts of {len(mine)} layers"
    fits = smallest_fitting(graph, conv_layout)
    if fits is not None and fits.name != result.target.name:
        fix = f"the smallest shipped target that holds it is {fits.name} ({fits.about})"
    else:
        fix = ("no shipped target holds it: prune it (fewer synapses), use fewer bits, or pass "
               "more or larger tiles (--tiles N)")
    figures = ", ".join(f"{k} {need[k]:,} (a tile holds {cap[k]:,})" for k in over)
    return (f"the network does not fit target {result.target.name} ({result.target.n_tiles} "
            f"tile{'s' * (result.target.n_tiles > 1)} of size {result.target.size}): tile "
            f"{worst_t} needs {figures}; {where}. Every layer is already spread over all "
            f"tiles; {fix}")
