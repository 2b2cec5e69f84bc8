"""Per-tile memory images of a partitioned network (a pure compiler pass; docs/architecture.md,
"Tiles").

:func:`map_tiles` lays each tile out as :func:`snnc.hw.mapping.map_graph` lays out one core, on
the tile's *view* of the network (every projection cut to the output rows or channels of the
tile's parts, :func:`snnc.compiler.tiles.tile_needs`'s view), then keeps only what the tile
holds:

- neurons: its parts, numbered from 0 in population order (a population without a part on the
  tile keeps a record of ``SIZE`` 0 at the next free neuron);
- sources: the populations with at least one entry landing on its parts, each whole (spikes
  arrive with their population's own index), numbered in population order;
- entries: those whose target is on the tile, in the view's order, so that every source's list
  (a convolution class list's slice too) stays contiguous; weights repacked per region.

The single-core image of the same network is the one-tile case (tested).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..hw.convlists import DEFAULT_CONV_LISTS
from ..hw.mapping import ArrayImage, CoreImage, _pack, core_params_for, map_graph
from ..hw.params import ArrayParams, CoreParams, SourceMode, bits_for
from ..ir import Graph
from ..sim.core import unpack_weights
from .tiles import Partition, partition, tile_view

__all__ = ["map_tiles", "array_params", "write_array_hardware", "array_params_from",
           "tiling_report", "ARRAY_VERILOG_LIMIT"]


def _tile_image(graph: Graph, local: dict, conv_layout: str) -> tuple[CoreImage, list[int]]:
    """Tile image for the parts ``local`` (pop -> (lo, hi)), and the populations it receives."""
    full = map_graph(tile_view(graph, local), conv_layout)
    K = graph.n_pops
    newn = np.full(full.n_neurons, -1, dtype=np.int64)
    nbase, sizes, n = [0] * K, [0] * K, 0
    for k in range(1, K):
        nbase[k] = n
        if k in local:
            lo, hi = local[k]
            old = full.pops[k]["NBASE"]
            newn[old + lo:old + hi] = n + np.arange(hi - lo)
            sizes[k] = hi - lo
            n += hi - lo
    bias = full.bias[newn >= 0][np.argsort(newn[newn >= 0])]
    cols = {c: [] for c in ("start", "count", "y", "x", "tgt", "ky", "kx", "conv", "wgt")}
    sbase, tbase, wbase = [0] * K, [0] * K, [0] * K
    received, is_conv = [], []
    s = entries = words = 0
    for k in range(K):
        pk = full.pops[k]
        if not (k == 0 or pk["SPIKING"]) or full.pop_sizes[k] == 0:
            continue
        n_src = full.pop_sizes[k]
        src = slice(pk["SBASE"], pk["SBASE"] + n_src)
        start, count = full.ptr_start[src], full.ptr_count[src]
        t0 = pk["TBASE"]
        t1 = t0 + int((start + count).max()) if count.sum() else t0
        region = slice(t0, t1)
        tgt = full.tgt[region]
        keep = (newn[tgt] >= 0) if len(tgt) else np.zeros(0, bool)
        if not keep.any():
            continue
        prefix = np.concatenate([[0], np.cumsum(keep)])
        new_start = prefix[start]
        new_count = prefix[start + count] - new_start
        pool = pk["SMODE"] == SourceMode.POOL
        if pool:
            packed = np.zeros(0, np.int64)
        else:
            w = unpack_weights(full.wgt, pk["WBASE"], t1 - t0, pk["WSHIFT"])[keep]
            packed = _pack(w, 8 >> pk["WSHIFT"])
        conv = full.tgt_conv[region][keep]
        is_conv.append(np.full(len(conv), pk["SMODE"] == SourceMode.CONV))
        sbase[k], tbase[k], wbase[k] = s, entries, words
        for name, col in (("start", np.where(new_count == 0, 0, new_start)), ("count", new_count),
                          ("y", full.ptr_y[src]), ("x", full.ptr_x[src]),
                          ("tgt", newn[tgt[keep]]), ("ky", full.tgt_ky[region][keep]),
                          ("kx", full.tgt_kx[region][keep]), ("conv", conv), ("wgt", packed)):
            cols[name].append(np.asarray(col, dtype=np.int64))
        received.append(k)
        s += n_src
        entries += int(keep.sum())
        words += len(packed)
    pops = tuple(dict(full.pops[k], NBASE=nbase[k], SIZE=sizes[k] if k else full.pops[k]["SIZE"],
                      SBASE=sbase[k], TBASE=tbase[k], WBASE=wbase[k]) for k in range(K))
    cat = {c: (np.concatenate(v) if v else np.zeros(0, np.int64)) for c, v in cols.items()}
    # The convolutions with entries on the tile, renumbered in their order.
    conv_entry = np.concatenate(is_conv) if is_conv else np.zeros(0, bool)
    order, cat["conv"][conv_entry] = np.unique(cat["conv"][conv_entry], return_inverse=True)
    convs = tuple(full.convs[c] for c in order)
    return CoreImage(
        pops=pops, ptr_start=cat["start"], ptr_count=cat["count"], ptr_y=cat["y"],
        ptr_x=cat["x"], tgt=cat["tgt"], tgt_ky=cat["ky"], tgt_kx=cat["kx"],
        tgt_conv=cat["conv"], wgt=cat["wgt"], bias=bias.astype(np.int64), convs=convs,
        n_neurons=n, n_sources=s, n_entries=entries, n_words=words, n_pops=K,
        pop_sizes=full.pop_sizes, max_strength=full.max_strength, state_bits=full.state_bits,
        max_side=full.max_side, pool_strength=full.pool_strength, input_fed=0,
        part_sizes=tuple(sizes)), received


def map_tiles(graph: Graph, part: Partition, conv_layout: str = DEFAULT_CONV_LISTS) -> ArrayImage:
    """The memory images and routing tables of ``graph`` on ``part``'s target (module docstring).
    One synapse lane per tile; the input is walked every timestep.

    Routing is per sending part: a tile's spikes of population ``k`` go to the tiles that store
    an entry of a source in its part (``dst[t][k]``), and a receiving tile's pointer memory holds
    the sources from the first to the last part that sends to it (its window), not the whole
    population."""
    n = part.target.n_tiles
    K = graph.n_pops
    images, parts, received = [], [], []
    for t in range(n):
        local = {p.pop: (p.lo, p.hi) for p in part.on_tile(t)}
        img, rec = _tile_image(graph, local, conv_layout)
        images.append(img)
        received.append(rec)
        parts.append(tuple(local.get(k, (0, 0)) for k in range(K)))
    dst = [[0] * K for _ in range(n)]
    out = []
    for r, img in enumerate(images):
        windows = [(0, 0)] * K
        for k in received[r]:
            if k == 0:                       # the host sends every input to every receiver
                windows[0] = (0, graph.size(0))
                for t in range(n):
                    dst[t][0] |= 1 << r
                continue
            sb = img.pops[k]["SBASE"]
            count = img.ptr_count[sb:sb + graph.size(k)]
            senders = [t for t in range(n) if count[slice(*parts[t][k])].any()]
            for t in senders:
                dst[t][k] |= 1 << r
            windows[k] = (min(parts[t][k][0] for t in senders),
                          max(parts[t][k][1] for t in senders))
        out.append(_windowed(img, received[r], windows))
    return ArrayImage(tiles=tuple(out), parts=tuple(parts),
                      dst=tuple(tuple(d) for d in dst), cols=part.target.cols,
                      rows=part.target.rows, pop_sizes=tuple(graph.size(k) for k in range(K)))


def _windowed(img: CoreImage, received: list[int], windows: list) -> CoreImage:
    """``img`` (every received population whole in its pointer memory) with only each
    population's window ``(a, b)`` kept; ``SBASE`` becomes the (virtual) pointer of source 0."""
    cols = {c: [] for c in ("start", "count", "y", "x")}
    pops = [dict(p) for p in img.pops]
    s = 0
    for k in received:
        a, b = windows[k]
        old = img.pops[k]["SBASE"]
        for c, arr in (("start", img.ptr_start), ("count", img.ptr_count), ("y", img.ptr_y),
                       ("x", img.ptr_x)):
            cols[c].append(arr[old + a:old + b])
        pops[k]["SBASE"] = s - a
        s += b - a
    for k in range(len(pops)):
        if k not in received:
            pops[k]["SBASE"] = 0
    cat = {c: (np.concatenate(v) if v else np.zeros(0, np.int64)) for c, v in cols.items()}
    return dataclasses.replace(img, pops=tuple(pops), ptr_start=cat["start"],
                               ptr_count=cat["count"], ptr_y=cat["y"], ptr_x=cat["x"],
                               n_sources=s, windows=tuple(windows))


def array_params(image: ArrayImage, timesteps: int, tile=None) -> ArrayParams:
    """The array for ``image``: tiles of the fixed size ``tile`` (a :class:`CoreParams`, e.g. a
    target's :data:`~snnc.compiler.tiles.TILE_SIZES` entry), or, without it, the smallest tile
    that holds every tile's image (tests and studies). Tile mode, one lane; flit indices and
    inboxes hold the largest population."""
    imgs = image.tiles
    if tile is None:
        need = [core_params_for(img, timesteps=timesteps) for img in imgs]
        fields = {f: max(getattr(q, f) for q in need) for f in (
            "max_neurons", "max_sources", "max_synapses", "max_pops", "max_pop_size", "v_bits",
            "strength_bits", "max_convs", "coord_bits", "pool_count_bits")}
        fields["max_weight_words"] = max(q.weight_depth for q in need)
        fields["max_pool_sources"] = max(q.pool_depth for q in need)
        tile = CoreParams(**fields)
    tile = dataclasses.replace(tile, tile=True, lanes=1, bank_skew=0, input_current_depth=0)
    largest = max(image.pop_sizes)
    return ArrayParams(tile=tile, cols=image.cols, rows=image.rows,
                       index_bits=bits_for(max(1, largest - 1)), inbox_depth=largest + 1)


#: Generating an array's Verilog writes every word of every tile's memories: above this many
#: synapse entries over all tiles (about 45 s of generation, docs/architecture.md "Generator
#: limits") a bundle's ``array.v`` gets tiles sized to the network's largest tile instead of the
#: target's (recorded as ``verilog_tiles: "fitted"``); images and cycle model are the target's.
ARRAY_VERILOG_LIMIT = 1 << 17


def tiling_report(graph: Graph, part: Partition, image: ArrayImage, params: ArrayParams) -> dict:
    """Per-tile utilization against the tile's capacity, and the longest route (JSON-ready)."""
    tp = params.tile
    tiles = []
    for t, img in enumerate(image.tiles):
        bits = {"neurons": img.n_neurons * tp.v_bits,
                "synapse_bits": img.n_entries * tp.tgt_bits + img.n_words * 8 + img.n_sources * tp.ptr_bits}
        cap_bits = tp.max_synapses * tp.tgt_bits + tp.weight_depth * 8 + tp.max_sources * tp.ptr_bits
        tiles.append({
            "tile": t, "position": list(params.mesh.position(t)),
            "parts": [{"layer": graph.pop(p.pop).name, "neurons": [p.lo, p.hi]}
                      for p in part.on_tile(t)],
            "neurons": img.n_neurons, "neuron_capacity": tp.max_neurons,
            "sources": img.n_sources, "source_capacity": tp.max_sources,
            "synapse_entries": img.n_entries, "synapse_capacity": tp.max_synapses,
            "synapse_bits": bits["synapse_bits"], "synapse_bit_capacity": cap_bits,
            "receives": [graph.pop(k).name for k in range(graph.n_pops) if image.receives(t, k)]})
    return {"tiles": tiles, "longest_route": part.longest_route()}


def write_array_hardware(out_dir, graph: Graph, target, conv_layout: str = DEFAULT_CONV_LISTS) -> dict:
    """Write a tiled bundle's hardware: ``array.v`` (:class:`snnc.hw.array.TileArray`, top
    ``snnc_array``), each tile's memory images under ``mem/tile<t>/`` and the routing tables in
    ``mem/routing.json``; return the manifest's ``core`` section. Raises
    :class:`~snnc.compiler.tiles.TilingError` when the network does not fit ``target``."""
    import json
    from pathlib import Path

    from amaranth.back import verilog

    from ..hw.array import TileArray
    from ..hw.mapping import MappingError, check_fits, image_usage, write_images
    from .tiles import TilingError

    out = Path(out_dir)
    T = graph.timesteps
    part = partition(graph, target, conv_layout)
    image = map_tiles(graph, part, conv_layout)
    params = array_params(image, T, target.tile)
    for t, img in enumerate(image.tiles):
        try:
            check_fits(img, params.tile, T)
        except MappingError as exc:
            raise TilingError(f"tile {t} of target {target.name}: {exc}") from None
    fitted = params.n_tiles * params.tile.max_synapses > ARRAY_VERILOG_LIMIT
    vparams = params
    if fitted:       # the network's depths, the target's widths (so the same cycles)
        depths = array_params(image, T).tile
        vparams = dataclasses.replace(params, tile=dataclasses.replace(params.tile, **{
            f: getattr(depths, f) for f in ("max_neurons", "max_sources", "max_synapses",
                                             "max_weight_words", "max_pool_sources",
                                             "max_pop_size", "max_convs")}))
    memories = {"routing": "mem/routing.json"}
    tiles = []
    for t, img in enumerate(image.tiles):
        mem = write_images(out, f"mem/tile{t}", img, vparams.tile)
        memories.update({f"tile{t}/{k}": v for k, v in mem.items()})
        tiles.append({"memories": mem, "usage": image_usage(img, vparams.tile)})
    (out / "mem" / "routing.json").write_text(json.dumps(
        {"parts": [list(map(list, p)) for p in image.parts],
         "dst": [list(d) for d in image.dst]}, indent=1) + "\n")
    (out / "array.v").write_text(verilog.convert(TileArray(vparams), name="snnc_array"))

    def arr(p: ArrayParams) -> dict:
        return {"cols": p.cols, "rows": p.rows, "index_bits": p.index_bits,
                "mesh_depth": p.mesh_depth, "inbox_depth": p.inbox_depth,
                "tile": {f: getattr(p.tile, f) for f in p.tile.__dataclass_fields__}}
    return {"tiled": True, "top": "snnc_array", "verilog": "array.v", "conv_lists": conv_layout,
            "target": {"name": target.name, "cols": target.cols, "rows": target.rows,
                       "size": target.size, "about": target.about},
            "array": arr(params), "verilog_array": arr(vparams),
            "verilog_tiles": "fitted" if fitted else "target",
            "memories": memories, "tiles": tiles,
            "report": tiling_report(graph, part, image, params)}


def array_params_from(doc: dict) -> ArrayParams:
    """The :class:`ArrayParams` a manifest records (:func:`write_array_hardware`)."""
    return ArrayParams(tile=CoreParams(**doc["tile"]), cols=doc["cols"], rows=doc["rows"],
                       index_bits=doc["index_bits"], mesh_depth=doc["mesh_depth"],
                       inbox_depth=doc["inbox_depth"])
