"""Bit-exact comparison of the RTL (cocotb) against the reference model and the cycle model."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..hw.convlists import DEFAULT_CONV_LISTS
from ..hw.mapping import CoreImage, config_writes, map_graph
from ..hw.params import CoreParams, Counter
from ..ir import Graph
from ..sim.core import CoreModel, CoreRun
from ..sim.reference import run as ref_run
from . import runner

__all__ = ["RtlReport", "network_job", "compare_sample", "verify_on_rtl", "run_networks"]


def _signed(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def widths(params: CoreParams) -> dict:
    return {name: getattr(params, name) for name in
            ("source_addr_bits", "input_bits", "pop_bits", "local_bits", "strength_bits",
             "v_bits", "rb_bits")}


def network_job(graph: Graph, params: CoreParams, xs: np.ndarray, timesteps: int,
                model: CoreRun, writes=None, *, conv_lists: str = DEFAULT_CONV_LISTS) -> dict:
    """The cocotb job for one network; ``writes`` (default: mapped from ``graph`` with
    ``conv_lists``) load the core."""
    image = map_graph(graph, conv_lists, params.lanes, params.bank_skew)
    if writes is None:
        writes = config_writes(image, params, timesteps)
    return {"writes": [list(w) for w in writes], "samples": xs.tolist(),
            "timesteps": int(timesteps), "n_neurons": image.n_neurons, "n_pops": image.n_pops,
            "max_cycles": int(model.cycles.max(initial=0)) * 50 + 10_000}


def _contract_state(image: CoreImage, params: CoreParams, n: int, word: int) -> int:
    """A membrane word read back from the core as the contract states it: signed, except a
    max-pool gate state, which is unpacked to ``best_acc * 64 + best_idx``."""
    for pop in image.pops[1:]:
        if pop["GATE"] and pop["NBASE"] <= n < pop["NBASE"] + pop["SIZE"]:
            return (word & ((1 << params.v_bits) - 1)) >> params.strength_bits
    return _signed(word, params.v_bits)


def _where(image: CoreImage, graph: Graph, n: int) -> str:
    for k in range(1, image.n_pops):
        nb, size = image.pops[k]["NBASE"], image.pops[k]["SIZE"]
        if nb <= n < nb + size:
            return f"population {k} ('{graph.pop(k).name}') neuron {n - nb}"
    return f"neuron {n}"


def compare_sample(graph: Graph, params: CoreParams, model: CoreRun, b: int, got: dict, *,
                   stalls: bool = True) -> list[str]:
    """Mismatches of sample ``b`` between the model (== reference) and the RTL's record.

    Without ``stalls`` (no input gaps, no output backpressure) the core's TOTAL counter must be
    exactly the clear sweep plus ACTIVE; with stalls it can only be larger.
    """
    image = map_graph(graph, lanes=params.lanes, bank_skew=params.bank_skew)
    out = []
    want_ev = [list(e) for e in model.events[b]]
    got_ev = got["events"]
    if got_ev != want_ev:
        i = next((i for i, (a, c) in enumerate(zip(want_ev, got_ev)) if a != c),
                 min(len(want_ev), len(got_ev)))
        fmt = lambda e: ("none" if e is None else
                         f"(timestep {e[0]}, population {e[1]}, neuron {e[2]}, strength {e[3]})")
        exp = want_ev[i] if i < len(want_ev) else None
        act = got_ev[i] if i < len(got_ev) else None
        out.append(f"output event #{i}: expected {fmt(exp)}, got {fmt(act)} "
                   f"({len(want_ev)} expected events, {len(got_ev)} received)")
    v = [_contract_state(image, params, n, a) for n, a in enumerate(got["v"])]
    for n, (a, c) in enumerate(zip(model.v_final[b].tolist(), v)):
        if a != c:
            out.append(f"final membrane of {_where(image, graph, n)}: expected {a}, got {c}")
            break
    cnt = got["counters"]
    checks = [("active cycles", int(model.cycles[b]), cnt[Counter.ACTIVE]),
              ("synaptic ops", int(model.synops[b]), cnt[Counter.SYNOPS]),
              ("timesteps", len(model.cycles_per_timestep[b]), cnt[Counter.TIMESTEP])]
    checks += [(f"spikes of population {k}", int(model.spike_counts[b, k]), cnt[Counter.SPIKES + k])
               for k in range(1, image.n_pops)]
    out += [f"{name}: expected {a}, got {c}" for name, a, c in checks if a != c]
    total = int(model.cycles[b]) + model.clear_cycles
    if (cnt[Counter.TOTAL] != total) if not stalls else (cnt[Counter.TOTAL] < total):
        rel = "at least " if stalls else ""
        out.append(f"total cycles: expected {rel}{total}, got {cnt[Counter.TOTAL]}")
    return out


@dataclass
class RtlReport:
    """Outcome of running samples on the RTL and comparing them bit for bit."""
    n_samples: int = 0
    n_exact: int = 0
    mismatches: list = field(default_factory=list)
    cycles: list = field(default_factory=list)
    wall_cycles: list = field(default_factory=list)
    sim_seconds: float = 0.0
    simulator: str = "verilator"
    per_sample: list = field(default_factory=list)
    waves: list = field(default_factory=list)
    netlist: bool = False       # the iCE40 gate-level netlist ran in place of the RTL

    @property
    def all_exact(self) -> bool:
        return self.n_samples > 0 and self.n_exact == self.n_samples

    def summary(self) -> str:
        verdict = "BIT-EXACT" if self.all_exact else "MISMATCH"
        what = (f"netlist ({self.simulator}, synth_ice40)" if self.netlist
                else f"RTL ({self.simulator})")
        s = (f"{what} vs reference: {self.n_exact}/{self.n_samples} samples "
             f"bit-exact -> {verdict}")
        if self.cycles:
            s += (f"; cycles per inference {min(self.cycles)}..{max(self.cycles)} "
                  f"(mean {np.mean(self.cycles):.0f}), equal to the cycle model")
        return s


def run_networks(items, params: CoreParams, verilog: str, *, simulator="verilator", seed=0,
                 idle=0.0, stall=0.0, waves=False, keep_dir=None, reset_after=None,
                 netlist=False, conv_lists: str = DEFAULT_CONV_LISTS):
    """Run ``items`` = [(graph, xs, timesteps)] in one cocotb session on one build; an item may
    carry a fourth element, the configuration writes to load (default: mapped from the graph
    with ``conv_lists``, which is also the layout the cycle model counts the walk of).
    With ``netlist``, the build is the core's iCE40 gate-level netlist (:func:`runner.build`).

    Returns a list (per network) of (model run, list of per-sample mismatch lists, raw results).
    """
    # Every output event of a sample must fit the harness's event memory: at most one spike per
    # neuron per timestep plus one end-of-timestep token.
    need = max(T * (map_graph(g).n_neurons + 1) for g, _, T, *_ in items)
    max_events = max(1 << 14, 1 << (need - 1).bit_length())
    rtl = runner.build(verilog, params, simulator=simulator, waves=waves, max_events=max_events,
                       netlist=netlist)
    models, nets = [], []
    for graph, xs, T, *writes in items:
        xs = np.asarray(xs, dtype=np.int64)
        ref = ref_run(graph, xs, T)
        model = CoreModel(params).run(map_graph(graph, conv_lists, params.lanes, params.bank_skew),
                                      xs, T)
        if not np.array_equal(model.v_final, np.concatenate(ref.v_final, axis=1)):
            raise AssertionError("cycle model and reference disagree on membranes")
        models.append(model)
        nets.append(network_job(graph, params, xs, T, model, *writes, conv_lists=conv_lists))
    if reset_after:
        for net in nets:
            net["reset_after"] = int(reset_after)
    job = {"widths": widths(params), "seed": seed, "idle": idle, "stall": stall, "networks": nets}
    result = runner.run_job(rtl, job, waves=waves, keep_dir=keep_dir)
    out = []
    for (graph, xs, T, *_), model, got in zip(items, models, result["networks"]):
        mism = [compare_sample(graph, params, model, b, g, stalls=bool(idle or stall))
                for b, g in enumerate(got)]
        out.append((model, mism, got))
    return out


def verify_on_rtl(bundle, x_int, *, timesteps=None, progress=True, simulator="verilator",
                  seed=0, idle=0.0, stall=0.0, chunk=10, waves_dir=None,
                  netlist=False) -> RtlReport:
    """Run integer inputs ``x_int`` through the bundle's generated core and compare bit for bit.

    With ``netlist``, the core is synthesized for iCE40 with yosys first
    (:func:`snnc.fpga.netlist.synthesize_ice40`, cached) and the gate-level netlist runs the
    same cocotb job and the same comparison in place of the RTL.

    The core is built from the bundle's ``core.v`` and loaded from the bundle's own memory images
    (``mem/``), so a wrong image shows up as a mismatch against the reference. With ``waves_dir``, the first failing sample is run again with tracing on and its waveform
    (VCD from Verilator, FST from Icarus) is kept under ``waves_dir``.
    """
    from tqdm import tqdm

    from ..hw.images import config_writes_from_images

    params = CoreParams(**bundle.core["params"])
    verilog = (bundle.path / bundle.core.get("verilog", "core.v")).read_text()
    graph = bundle.graph
    T = graph.timesteps if timesteps is None else int(timesteps)
    writes = config_writes_from_images(bundle.path, bundle.core, params, T)
    x = np.asarray(x_int, dtype=np.int64).reshape(len(x_int), -1)
    report = RtlReport(simulator=simulator, netlist=bool(netlist))
    t0 = time.perf_counter()
    what = "netlist" if netlist else "RTL"
    bar = tqdm(total=len(x), desc=f"{what} ({simulator})", unit="sample", disable=not progress)
    try:
        _run_chunks(report, graph, params, verilog, x, T, writes, bar, simulator=simulator,
                    seed=seed, idle=idle, stall=stall, chunk=chunk, netlist=netlist,
                    conv_lists=bundle.conv_lists)
    finally:
        bar.close()
    report.sim_seconds = time.perf_counter() - t0
    failing = [r["sample"] for r in report.per_sample if not r["exact"]]
    if waves_dir is not None and failing:
        from pathlib import Path
        b = failing[0]
        keep = Path(waves_dir) / f"sample{b}"
        [(_, _, _)] = run_networks([(graph, x[b:b + 1], T, writes)], params, verilog,
                                   simulator=simulator, seed=seed, idle=idle, stall=stall,
                                   waves=True, keep_dir=keep, netlist=netlist,
                                   conv_lists=bundle.conv_lists)
        report.waves = sorted(str(f) for f in keep.iterdir() if f.suffix in (".vcd", ".fst"))
    return report


def _run_chunks(report, graph, params, verilog, x, T, writes, bar, *, simulator, seed, idle,
                stall, chunk, netlist, conv_lists):
    for lo in range(0, len(x), chunk):
        xs = x[lo:lo + chunk]
        [(model, mism, got)] = run_networks([(graph, xs, T, writes)], params, verilog,
                                            simulator=simulator, seed=seed, idle=idle, stall=stall,
                                            netlist=netlist, conv_lists=conv_lists)
        for b, m in enumerate(mism):
            report.per_sample.append({"sample": lo + b, "exact": not m, "mismatches": m,
                                      "cycles": int(model.cycles[b]),
                                      "rtl_active_cycles": int(got[b]["counters"][Counter.ACTIVE]),
                                      "wall_cycles": int(got[b]["wall_cycles"]),
                                      "prediction_rtl": _rtl_prediction(graph, params, got[b])})
            report.n_samples += 1
            report.n_exact += not m
            report.mismatches += [f"sample {lo + b}: {msg}" for msg in m]
            report.cycles.append(int(model.cycles[b]))
            report.wall_cycles.append(int(got[b]["wall_cycles"]))
        bar.update(len(xs))


def _rtl_prediction(graph: Graph, params: CoreParams, got: dict) -> int:
    """The prediction computed from what the RTL produced (membranes read back, or spikes)."""
    from ..ir import Readout
    image = map_graph(graph)
    k = graph.n_pops - 1
    if graph.readout is Readout.MEMBRANE:
        nb, n = image.pops[k]["NBASE"], image.pops[k]["SIZE"]
        v = [_contract_state(image, params, nb + i, a) for i, a in enumerate(got["v"][nb:nb + n])]
        return int(np.argmax(v))
    totals = np.zeros(graph.size(k), dtype=np.int64)
    for _, pop, index, strength in got["events"]:
        if pop == k:
            totals[index] += strength
    return int(np.argmax(totals))


def _rtl_prediction_from(graph: Graph, v_global, spike_totals) -> int:
    """The prediction from the membranes read back (single-core numbering) or, with a
    spike-count readout, from the last population's total spike strength per neuron."""
    from ..ir import Readout
    k = graph.n_pops - 1
    if graph.readout is Readout.MEMBRANE:
        start = sum(graph.size(j) for j in range(1, k))
        return int(np.argmax(np.asarray(v_global)[start:start + graph.size(k)]))
    return int(np.argmax(spike_totals))
