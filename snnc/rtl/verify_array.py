"""Run networks on the generated tile array under cocotb and compare them with the array's twin
(:class:`snnc.sim.array.ArrayModel`) and the reference, bit for bit and cycle for cycle.

The counterpart of :func:`snnc.rtl.verify.run_networks` for :class:`snnc.hw.array.TileArray`:
one build (one :class:`~snnc.hw.params.ArrayParams`) serves every network; each network's tiles
and routing tables are loaded through the array's ports.
"""

from __future__ import annotations

import numpy as np

from ..hw.array import table_writes
from ..hw.mapping import ArrayImage, config_writes
from ..hw.params import ArrayParams, Counter
from ..ir import Graph
from ..sim.array import ArrayModel, ArrayRun
from ..sim.reference import run as ref_run
from . import runner
from .array_harness import ARRAY_TOP, array_harness_verilog

__all__ = ["run_array_networks", "compare_array_sample", "array_job", "verify_array_bundle"]

TEST_MODULE = "snnc.rtl.cocotb_array"


def _widths(p: ArrayParams) -> dict:
    return {"n_tiles": p.n_tiles, "pop_bits": p.tile.pop_bits, "index_bits": p.index_bits,
            "strength_bits": p.tile.strength_bits, "input_bits": p.tile.input_bits}


def array_job(params: ArrayParams, image: ArrayImage, xs: np.ndarray, timesteps: int,
              model: ArrayRun, writes=None) -> dict:
    """The cocotb job for one network; ``writes`` (per tile, default: from ``image``) load it."""
    if writes is None:
        writes = [config_writes(img, params.tile, timesteps) for img in image.tiles]
    return {"writes": [[list(w) for w in tile] for tile in writes],
            "tables": [list(w) for w in table_writes(params, image)],
            "samples": np.asarray(xs).tolist(), "timesteps": int(timesteps),
            "n_neurons": [img.n_neurons for img in image.tiles], "n_pops": image.n_pops,
            "max_cycles": int(model.cycles.max(initial=0)) * 50 + 10_000}


def _contract_state(image: ArrayImage, params: ArrayParams, t: int, n: int, word: int) -> int:
    tp = params.tile
    word &= (1 << tp.rb_bits) - 1
    for pop in image.tiles[t].pops[1:]:
        if pop["GATE"] and pop["SIZE"] and pop["NBASE"] <= n < pop["NBASE"] + pop["SIZE"]:
            return (word & ((1 << tp.v_bits) - 1)) >> tp.strength_bits
    return word - (1 << tp.rb_bits) if word >> (tp.rb_bits - 1) else word


def _where(graph: Graph, image: ArrayImage, t: int, n: int) -> str:
    img = image.tiles[t]
    for k in range(1, image.n_pops):
        nb, size = img.pops[k]["NBASE"], img.pops[k]["SIZE"]
        if nb <= n < nb + size:
            return (f"population {k} ('{graph.pop(k).name}') neuron "
                    f"{image.parts[t][k][0] + n - nb}")
    return f"neuron {n}"


def compare_array_sample(graph: Graph, image: ArrayImage, params: ArrayParams, model: ArrayRun,
                         b: int, got: dict, *, stalls: bool = False) -> list[str]:
    """Mismatches of sample ``b`` between the twin and the RTL's record, per tile. Without
    ``stalls`` (no input gaps) every event's cycle and every ``TOTAL`` must be equal too."""
    out = []
    for t in range(image.n_tiles):
        want = [list(e) for e in model.monitor[b][t]]
        have = got["monitor"][t]
        if stalls:
            want, have = [e[1:] for e in want], [e[1:] for e in have]
        if have != want:
            i = next((i for i, (a, c) in enumerate(zip(want, have)) if a != c),
                     min(len(want), len(have)))
            exp = want[i] if i < len(want) else None
            act = have[i] if i < len(have) else None
            out.append(f"tile {t}, output event #{i}: expected {exp}, got {act} "
                       "([cycle,] pop, index, strength, eot)")
        tile = got["tiles"][t]
        v = [_contract_state(image, params, t, n, a) for n, a in enumerate(tile["v"])]
        for n, (a, c) in enumerate(zip(model.v_final[t][b].tolist(), v)):
            if a != c:
                out.append(f"tile {t}: final membrane of {_where(graph, image, t, n)}: "
                           f"expected {a}, got {c}")
                break
        cnt = tile["counters"]
        checks = [("active cycles", int(model.active[b, t]), cnt[Counter.ACTIVE]),
                  ("synaptic ops", int(model.synops[b, t]), cnt[Counter.SYNOPS]),
                  ("timesteps", len(model.spikes[0]) if model.spikes else 0, cnt[Counter.TIMESTEP])]
        checks += [(f"spikes of population {k}", int(model.spike_counts[b, t, k]),
                    cnt[Counter.SPIKES + k]) for k in range(1, image.n_pops)]
        out += [f"tile {t}: {name}: expected {a}, got {c}" for name, a, c in checks if a != c]
        total = int(model.total[b, t])
        if (cnt[Counter.TOTAL] < total) if stalls else (cnt[Counter.TOTAL] != total):
            out.append(f"tile {t}: total cycles: expected {'at least ' * stalls}{total}, "
                       f"got {cnt[Counter.TOTAL]}")
    return out


def run_array_networks(items, params: ArrayParams, verilog: str, *, simulator="verilator",
                       seed=0, idle=0.0, waves=False, keep_dir=None):
    """Run ``items`` = [(graph, image, xs, timesteps[, writes])] in one cocotb session on one
    build of ``verilog`` (module ``snnc_array``, built for ``params`` without a network).

    The twin is checked against the reference first. Returns, per network, (twin run, list of
    per-sample mismatch lists, raw results).
    """
    need = max(T * (img.n_neurons + image.n_pops + 1)
               for _, image, _, T, *_ in items for img in image.tiles)
    max_events = max(1 << 10, 1 << (need - 1).bit_length())
    harness = array_harness_verilog(params, max_events=max_events)
    rtl = runner.build(verilog, params, simulator=simulator, waves=waves, harness=harness,
                       toplevel=ARRAY_TOP, test_module=TEST_MODULE)
    models, nets = [], []
    for graph, image, xs, T, *writes in items:
        xs = np.asarray(xs, dtype=np.int64).reshape(len(xs), -1)
        model = ArrayModel(params).run(image, xs, T)
        ref = ref_run(graph, xs, T)
        if not np.array_equal(model.v_global, np.concatenate(ref.v_final, axis=1)):
            raise AssertionError("the array's twin and the reference disagree on membranes")
        models.append(model)
        nets.append(array_job(params, image, xs, T, model, *writes))
    job = {"widths": _widths(params), "seed": seed, "idle": idle, "networks": nets}
    result = runner.run_job(rtl, job, waves=waves, keep_dir=keep_dir)
    out = []
    for (graph, image, xs, T, *_), model, got in zip(items, models, result["networks"]):
        mism = [compare_array_sample(graph, image, params, model, b, g, stalls=bool(idle))
                for b, g in enumerate(got)]
        out.append((model, mism, got))
    return out


def verify_array_bundle(bundle, x_int, *, timesteps=None, progress=True, simulator="verilator",
                        seed=0, idle=0.0, chunk=10):
    """Run integer inputs ``x_int`` through a tiled bundle's ``array.v`` and compare every tile
    with the twin (and the twin with the reference), bit for bit and, without gaps, cycle for
    cycle. The tiles and routing tables are loaded from the bundle's own images (``mem/``)."""
    import json
    import time

    from tqdm import tqdm

    from ..hw.images import config_writes_from_images
    from .verify import RtlReport, _rtl_prediction_from

    _, params = bundle.array_params()
    verilog = (bundle.path / bundle.core["verilog"]).read_text()
    graph = bundle.graph
    T = graph.timesteps if timesteps is None else int(timesteps)
    image = bundle.array_image()
    writes = [config_writes_from_images(bundle.path, tile, params.tile, T)
              for tile in bundle.core["tiles"]]
    routing = json.loads((bundle.path / bundle.core["memories"]["routing"]).read_text())
    if [list(map(list, p)) for p in image.parts] != routing["parts"] or \
            [list(d) for d in image.dst] != routing["dst"]:
        raise AssertionError(f"{bundle.path}: mem/routing.json is not the target's partition")
    x = np.asarray(x_int, dtype=np.int64).reshape(len(x_int), -1)
    report = RtlReport(simulator=simulator)
    t0 = time.perf_counter()
    bar = tqdm(total=len(x), desc=f"RTL ({simulator}, {params.n_tiles} tiles)", unit="sample",
               disable=not progress)
    try:
        for lo in range(0, len(x), chunk):
            xs = x[lo:lo + chunk]
            [(model, mism, got)] = run_array_networks([(graph, image, xs, T, writes)], params,
                                                      verilog, simulator=simulator, seed=seed,
                                                      idle=idle)
            for b, m in enumerate(mism):
                v = [[_contract_state(image, params, t, n, a) for n, a in enumerate(tile["v"])]
                     for t, tile in enumerate(got[b]["tiles"])]
                report.per_sample.append({
                    "sample": lo + b, "exact": not m, "mismatches": m,
                    "cycles": int(model.cycles[b]),
                    "rtl_total_cycles": max(tile["counters"][Counter.TOTAL] for tile in got[b]["tiles"]),
                    "active_cycles_per_tile": [int(a) for a in model.active[b]],
                    "wall_cycles": int(got[b]["wall_cycles"]),
                    "prediction_rtl": _rtl_prediction_from(graph, _global_v(image, v),
                                                           _rtl_spike_totals(got[b], image))})
                report.n_samples += 1
                report.n_exact += not m
                report.mismatches += [f"sample {lo + b}: {msg}" for msg in m]
                report.cycles.append(int(model.cycles[b]))
                report.wall_cycles.append(int(got[b]["wall_cycles"]))
            bar.update(len(xs))
    finally:
        bar.close()
    report.sim_seconds = time.perf_counter() - t0
    return report


def _global_v(image: ArrayImage, v) -> np.ndarray:
    """Per-tile membranes read back, in the single core's neuron numbering."""
    nbase = np.cumsum([0] + list(image.pop_sizes[1:]))
    out = np.zeros(int(nbase[-1]), dtype=np.int64)
    for t, img in enumerate(image.tiles):
        for k in range(1, image.n_pops):
            lo, hi = image.parts[t][k]
            nb = img.pops[k]["NBASE"]
            out[nbase[k - 1] + lo:nbase[k - 1] + hi] = v[t][nb:nb + hi - lo]
    return out


def _rtl_spike_totals(got: dict, image: ArrayImage) -> np.ndarray:
    """Total spike strength per neuron of the last population, from the tiles' events."""
    K = image.n_pops
    out = np.zeros(image.pop_sizes[K - 1], dtype=np.int64)
    for tile in got["monitor"]:
        for _, pop, index, strength, eot in tile:
            if not eot and pop == K - 1:
                out[index] += strength
    return out
