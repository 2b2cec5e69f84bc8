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
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..ir import Graph, required_state_bits, verify
from .params import CfgSel, CoreParams, ParamField, bits_for

__all__ = ["MappingError", "CoreImage", "map_graph", "core_params_for", "config_writes",
           "write_hardware", "WSHIFT"]

#: log2(weights per 8-bit word) per weight width.
WSHIFT = {8: 0, 4: 1, 2: 2}


class MappingError(ValueError):
    """The network cannot be mapped onto the core (too large, or mixed widths per source)."""


@dataclass(frozen=True, eq=False)
class CoreImage:
    """Everything the core loads for one network, plus what the cycle model needs.

    ``pops[k]`` maps :class:`ParamField` names to integers; ``fanout[g]`` is the number of
    synapse entries of global source ``g``; ``source_of_neuron[n]`` is the global source index of
    global neuron ``n`` (-1 for neurons that are not sources).
    """
    pops: tuple
    ptr_start: np.ndarray
    ptr_count: np.ndarray
    tgt: np.ndarray
    wgt: np.ndarray
    bias: np.ndarray
    n_neurons: int
    n_sources: int
    n_entries: int
    n_words: int
    n_pops: int
    pop_sizes: tuple
    max_strength: int
    state_bits: int

    @property
    def fanout(self) -> np.ndarray:
        return self.ptr_count

    def ptr_words(self, params: CoreParams) -> np.ndarray:
        return self.ptr_start | (self.ptr_count << params.syn_addr_bits)


def _pack(weights: np.ndarray, bits: int) -> np.ndarray:
    lanes = 8 // bits
    n = len(weights)
    words = np.zeros((n + lanes - 1) // lanes, dtype=np.int64)
    mask = (1 << bits) - 1
    for lane in range(lanes):
        part = weights[lane::lanes] & mask
        words[:len(part)] |= part << (bits * lane)
    return words


def map_graph(graph: Graph) -> CoreImage:
    """Lay ``graph`` out in the core's memories (independent of any core's capacity)."""
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
    starts, counts, tgts, wgts = [], [], [], []
    tbase, wbase, wshift = [0] * K, [0] * K, [0] * K
    entries = words = 0
    for k in range(K):
        if not is_source[k]:
            continue
        out = graph.outgoing(k)
        widths = {p.bits for p in out}
        if len(widths) > 1:
            raise MappingError(f"population {k} ('{graph.pop(k).name}') feeds projections with "
                               f"different weight widths {sorted(widths)}; one tile stores one "
                               "width per source population")
        bits = widths.pop() if widths else 8
        src_i, tgt_g, w = [], [], []
        for proj in out:
            j, i = np.nonzero(proj.weights)
            src_i.append(i)
            tgt_g.append(j + nbase[proj.dst])
            w.append(proj.weights[j, i])
        if out:
            src_i, tgt_g, w = (np.concatenate(a).astype(np.int64) for a in (src_i, tgt_g, w))
            order = np.lexsort((tgt_g, src_i))
            src_i, tgt_g, w = src_i[order], tgt_g[order], w[order]
        else:
            src_i = tgt_g = w = np.zeros(0, dtype=np.int64)
        cnt = np.bincount(src_i, minlength=graph.size(k)).astype(np.int64)
        starts.append(np.concatenate([[0], np.cumsum(cnt)[:-1]]).astype(np.int64))
        counts.append(cnt)
        packed = _pack(w, bits)
        tbase[k], wbase[k], wshift[k] = entries, words, WSHIFT[bits]
        tgts.append(tgt_g)
        wgts.append(packed)
        entries += len(tgt_g)
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
        })
    bias = (np.concatenate([p.bias for p in graph.populations]).astype(np.int64))
    return CoreImage(
        pops=tuple(pops), ptr_start=np.concatenate(starts), ptr_count=np.concatenate(counts),
        tgt=np.concatenate(tgts) if tgts else np.zeros(0, np.int64),
        wgt=np.concatenate(wgts) if wgts else np.zeros(0, np.int64), bias=bias,
        n_neurons=n, n_sources=s, n_entries=entries, n_words=words, n_pops=K,
        pop_sizes=tuple(graph.size(k) for k in range(K)),
        max_strength=max(p.s_max for p in graph.populations),
        state_bits=required_state_bits(graph))


def core_params_for(image: CoreImage, **overrides) -> CoreParams:
    """The smallest core that holds ``image`` (capacities may be raised with ``overrides``)."""
    fields = dict(
        max_neurons=max(1, image.n_neurons), max_sources=max(1, image.n_sources),
        max_synapses=max(1, image.n_entries, image.n_words), max_pops=max(2, image.n_pops),
        max_pop_size=max(image.pop_sizes[1:]), v_bits=max(4, image.state_bits),
        strength_bits=bits_for(image.max_strength))
    fields.update(overrides)
    return CoreParams(**fields)


def check_fits(image: CoreImage, params: CoreParams) -> None:
    """Raise :class:`MappingError` naming every limit ``image`` exceeds on ``params``."""
    problems = params.fits(neurons=image.n_neurons, sources=image.n_sources,
                           synapses=max(image.n_entries, image.n_words), pops=image.n_pops,
                           pop_size=max(image.pop_sizes[1:]), v_bits=image.state_bits,
                           s_max=image.max_strength)
    if image.pop_sizes[0] > params.max_sources:
        problems.append(f"input size: the network needs {image.pop_sizes[0]}, the core holds "
                        f"{params.max_sources}")
    if problems:
        raise MappingError("the network does not fit the core: " + "; ".join(problems) +
                           ". Prune more, use fewer/smaller layers, or build a larger core.")


def _twos(value: int, bits: int) -> int:
    return int(value) & ((1 << bits) - 1)


def config_writes(image: CoreImage, params: CoreParams, timesteps: int) -> list[tuple[int, int, int]]:
    """The ``(cfg_sel, cfg_addr, cfg_data)`` writes that load ``image`` into a core."""
    check_fits(image, params)
    vb = params.v_bits
    writes = [(CfgSel.PTR, a, int(d)) for a, d in enumerate(image.ptr_words(params))]
    writes += [(CfgSel.TGT, a, int(d)) for a, d in enumerate(image.tgt)]
    writes += [(CfgSel.WGT, a, int(d)) for a, d in enumerate(image.wgt)]
    writes += [(CfgSel.BIAS, a, _twos(d, vb)) for a, d in enumerate(image.bias)]
    for k, pop in enumerate(image.pops):
        for f in ParamField:
            writes.append((CfgSel.PARAM, k * 16 + f, _twos(pop[f.name], vb)))
    writes += [(CfgSel.GLOBAL, 0, image.n_pops), (CfgSel.GLOBAL, 1, int(timesteps)),
               (CfgSel.GLOBAL, 2, image.n_neurons)]
    return [(int(s), int(a), int(d)) for s, a, d in writes]


def _hex(path: Path, values, bits: int) -> None:
    digits = max(1, (bits + 3) // 4)
    path.write_text("".join(f"{_twos(v, bits):0{digits}x}\n" for v in values))


def write_hardware(out_dir, graph: Graph) -> dict:
    """Write ``core.v`` (a core sized for ``graph``) and the memory images; return the config."""
    from amaranth.back import verilog
    from .core import Core

    out = Path(out_dir)
    image = map_graph(graph)
    params = core_params_for(image)
    mem = out / "mem"
    mem.mkdir(parents=True, exist_ok=True)
    _hex(mem / "ptr.hex", image.ptr_words(params), params.ptr_bits)
    _hex(mem / "tgt.hex", image.tgt, params.neuron_addr_bits)
    _hex(mem / "wgt.hex", image.wgt, 8)
    _hex(mem / "bias.hex", image.bias, params.v_bits)
    (mem / "params.json").write_text(json.dumps(
        {"populations": list(image.pops), "n_pops": image.n_pops,
         "n_neurons": image.n_neurons}, indent=1) + "\n")
    core = Core(params)
    (out / "core.v").write_text(verilog.convert(core, name="snnc_core"))
    cfg = {name: getattr(params, name) for name in params.__dataclass_fields__}
    return {"params": cfg, "top": "snnc_core", "verilog": "core.v",
            "memories": {"ptr": "mem/ptr.hex", "tgt": "mem/tgt.hex", "wgt": "mem/wgt.hex",
                         "bias": "mem/bias.hex", "params": "mem/params.json"},
            "usage": {"neurons": image.n_neurons, "sources": image.n_sources,
                      "synapse_entries": image.n_entries, "weight_words": image.n_words,
                      "memory_bits": memory_bits(image, params)}}


def memory_bits(image: CoreImage, params: CoreParams) -> dict:
    """Bits of each memory the network occupies (used entries times word width)."""
    return {"ptr": image.n_sources * params.ptr_bits,
            "tgt": image.n_entries * params.neuron_addr_bits,
            "wgt": image.n_words * 8,
            "bias": image.n_neurons * params.v_bits,
            "vmem": image.n_neurons * params.v_bits}
