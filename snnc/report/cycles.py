"""Cycle reports from the cycle-accurate model: per layer, per timestep, latency, utilization."""

from __future__ import annotations

import numpy as np

from ..ir import Graph
from ..sim.core import CoreRun

__all__ = ["cycle_report", "format_cycle_report"]


def cycle_report(graph: Graph, run: CoreRun, *, clock_mhz: float,
                 reference_synops: float | None = None) -> dict:
    """JSON-ready summary of ``run`` (means over the batch, plus min/max of the total).

    ``synops_core_mean`` is what the core does (a core that walks the input once does its
    operations once); ``reference_synops`` (the contract's count, mean per inference) is
    reported beside it.
    """
    if not clock_mhz > 0:
        raise ValueError(f"clock must be positive, not {clock_mhz} MHz")
    cyc = run.cycles.astype(np.float64)
    layers = [{"layer": "input events", "cycles": float(run.cycles_per_phase["input"].sum(axis=1).mean())}]
    for k in range(1, graph.n_pops):
        layers.append({"layer": graph.pop(k).name,
                       "cycles": float(run.cycles_per_phase[("pop", k)].sum(axis=1).mean())})
    occ = [run.occupancy(b) for b in range(len(cyc))]
    return {
        "samples": int(len(cyc)),
        "timesteps": int(run.cycles_per_timestep.shape[1]),
        "cycles_mean": float(cyc.mean()), "cycles_min": int(cyc.min()), "cycles_max": int(cyc.max()),
        "cycles_per_timestep_mean": [float(v) for v in run.cycles_per_timestep.mean(axis=0)],
        "clear_cycles": int(run.clear_cycles),
        "clock_mhz": float(clock_mhz),
        "latency_us_mean": float((cyc.mean() + run.clear_cycles) / clock_mhz),
        "inferences_per_s": float(clock_mhz * 1e6 / (cyc.mean() + run.clear_cycles)),
        "per_layer": layers,
        "synapse_pipeline_utilization": float(np.mean([o["synapse_pipeline"] for o in occ])),
        "neuron_unit_utilization": float(np.mean([o["neuron_unit"] for o in occ])),
        "spike_buffer_high_water": [int(v) for v in run.spike_buffer_high_water.max(axis=0)],
        "synops_core_mean": float(run.synops.mean()),
        "synops_reference_mean": None if reference_synops is None else float(reference_synops),
        "lanes": int(run.lanes),
        "bank_stall_cycles_mean": float(run.bank_stalls.mean()) if run.bank_stalls is not None else 0.0,
    }


def format_cycle_report(rep: dict) -> str:
    lines = [f"cycles per inference: mean {rep['cycles_mean']:.1f} (min {rep['cycles_min']}, "
             f"max {rep['cycles_max']}) over {rep['samples']} samples, T={rep['timesteps']}; "
             f"+{rep['clear_cycles']} cycles to clear state",
             f"latency at {rep['clock_mhz']:g} MHz: {rep['latency_us_mean']:.1f} us per inference "
             f"({rep['inferences_per_s']:,.0f} inferences/s)",
             "cycles per layer (mean per inference):"]
    for row in rep["per_layer"]:
        share = row["cycles"] / rep["cycles_mean"] if rep["cycles_mean"] else 0.0
        lines.append(f"  {row['layer']:<16} {row['cycles']:>12.1f}  ({share:6.1%})")
    lanes = rep.get("lanes", 1)
    lanes_note = f" ({lanes} lanes: per lane)" if lanes > 1 else ""
    lines.append(f"utilization: synapse pipeline{lanes_note} {rep['synapse_pipeline_utilization']:.1%}, "
                 f"neuron unit {rep['neuron_unit_utilization']:.1%}; spike buffer high-water "
                 f"per layer {rep['spike_buffer_high_water']}")
    ref = rep.get("synops_reference_mean")
    line = f"synaptic operations the core does: {rep['synops_core_mean']:,.1f} per inference"
    if ref is not None and ref != rep["synops_core_mean"]:
        line += (f" (the reference counts {ref:,.1f}: the core walks the input once per "
                 f"inference and adds it as a stored input current)")
    lines.append(line)
    if lanes > 1:
        stall = rep.get("bank_stall_cycles_mean", 0.0)
        share = stall / rep["cycles_mean"] if rep["cycles_mean"] else 0.0
        lines.append(f"membrane-bank conflicts: {stall:,.1f} stall cycles per inference "
                     f"({share:.1%} of the cycles)")
    return "\n".join(lines)
