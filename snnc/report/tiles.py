"""Reports of tiled bundles: the tiling (per-tile utilization, longest route) and the array's
cycles and traffic from its twin (:class:`snnc.sim.array.ArrayModel`)."""

from __future__ import annotations

import numpy as np

from ..sim.array import ArrayRun

__all__ = ["format_tiling", "array_cycle_report", "format_array_cycle_report", "run_array"]


def format_tiling(core: dict) -> list[str]:
    """Lines describing a tiled bundle's target and per-tile utilization (``core`` is the
    manifest's section written by :func:`snnc.compiler.tilemap.write_array_hardware`)."""
    t = core["target"]
    rep = core["report"]
    lines = [f"  target {t['name']}: {t['cols']} x {t['rows']} tiles of size {t['size']} "
             f"({t['about']}); longest route {rep['longest_route']} routers"]
    if core.get("verilog_tiles") == "fitted":
        lines.append("  array.v has tiles sized to this network (the target's would take too long "
                     "to generate); images and cycles are the target's")
    lines.append("  tile  (x,y)  neurons        synapse entries   synapse bits      layers")
    for tile in rep["tiles"]:
        parts = ", ".join(f"{p['layer']}[{p['neurons'][0]}:{p['neurons'][1]}]"
                          for p in tile["parts"]) or "-"
        lines.append(f"  {tile['tile']:>4}  ({tile['position'][0]},{tile['position'][1]})  "
                     f"{tile['neurons']:>5}/{tile['neuron_capacity']:<7} "
                     f"{tile['synapse_entries']:>7}/{tile['synapse_capacity']:<9} "
                     f"{100 * tile['synapse_bits'] / tile['synapse_bit_capacity']:>5.1f}%"
                     f"{'':11} {parts}")
    return lines


def run_array(bundle, x_int: np.ndarray, timesteps: int, *, chunk: int = 16,
              progress: bool = True) -> tuple:
    """Run the bundle's array twin on ``x_int`` (a progress bar on stderr: the twin steps the
    mesh clock by clock, about 10,000 cycles per second); check it against the reference.
    Returns the list of runs (one per chunk) and the mean reference synops per inference."""
    import sys

    from tqdm import tqdm

    from ..compiler.errors import SnncError
    from ..sim.array import ArrayModel
    from ..sim.reference import run

    params, _ = bundle.array_params()
    image = bundle.array_image()
    runs, ref_synops = [], 0
    with tqdm(total=len(x_int), unit="sample", file=sys.stderr, disable=not progress,
              desc=f"cycle model ({params.n_tiles} tiles)") as bar:
        for i in range(0, len(x_int), chunk):
            r = ArrayModel(params).run(image, x_int[i:i + chunk], timesteps)
            ref = run(bundle.graph, x_int[i:i + chunk], timesteps)
            if not np.array_equal(r.v_global, np.concatenate(ref.v_final, axis=1)):
                raise SnncError("internal error: the array's cycle model disagrees with the "
                                "reference")
            runs.append(r)
            ref_synops += int(ref.synops.sum())
            bar.update(len(x_int[i:i + chunk]))
    return runs, ref_synops / max(1, len(x_int))


def array_cycle_report(runs: list[ArrayRun], core: dict, *, clock_mhz: float,
                       reference_synops: float) -> dict:
    """JSON-ready summary: cycles per inference (the last tile's ``TOTAL``, clear sweep
    included), latency, per-tile active cycles and utilization, inter-tile traffic."""
    if not clock_mhz > 0:
        raise ValueError(f"clock must be positive, not {clock_mhz} MHz")
    cyc = np.concatenate([r.cycles for r in runs]).astype(np.float64)
    active = np.concatenate([r.active for r in runs]).astype(np.float64)
    total = np.concatenate([r.total for r in runs]).astype(np.float64)
    synops = np.concatenate([r.synops for r in runs]).astype(np.float64)
    traffic = np.concatenate([r.traffic for r in runs]).astype(np.float64)
    t = core["target"]
    return {
        "target": t["name"], "tiles": int(active.shape[1]), "samples": int(len(cyc)),
        "cycles_mean": float(cyc.mean()), "cycles_min": int(cyc.min()), "cycles_max": int(cyc.max()),
        "clock_mhz": float(clock_mhz), "latency_us_mean": float(cyc.mean() / clock_mhz),
        "inferences_per_s": float(clock_mhz * 1e6 / cyc.mean()),
        "per_tile": [{"tile": i, "active_cycles_mean": float(active[:, i].mean()),
                      "busy_fraction": float((active[:, i] / cyc).mean()),
                      "stalled_cycles_mean": float((total[:, i] - active[:, i]).mean()),
                      "synops_mean": float(synops[:, i].mean())}
                     for i in range(active.shape[1])],
        "traffic_flits_mean": float(traffic.mean()),
        "longest_route": int(core["report"]["longest_route"]),
        "synops_reference_mean": float(reference_synops),
    }


def format_array_cycle_report(rep: dict) -> str:
    lines = [f"cycles per inference: mean {rep['cycles_mean']:,.1f} (min {rep['cycles_min']:,}, "
             f"max {rep['cycles_max']:,}) on {rep['tiles']} tiles ({rep['target']}); latency "
             f"{rep['latency_us_mean']:,.1f} us at {rep['clock_mhz']:g} MHz "
             f"({rep['inferences_per_s']:,.0f} inferences/s)",
             f"inter-tile traffic: {rep['traffic_flits_mean']:,.1f} flits per inference "
             f"(spikes, inputs, end-of-layer tokens); longest route {rep['longest_route']} routers",
             "tile  active cycles  busy   waiting (clear, barriers, mesh)   synaptic ops"]
    for t in rep["per_tile"]:
        lines.append(f"{t['tile']:>4}  {t['active_cycles_mean']:>13,.1f}  "
                     f"{100 * t['busy_fraction']:>4.0f}%  {t['stalled_cycles_mean']:>31,.1f}  "
                     f"{t['synops_mean']:>12,.1f}")
    return "\n".join(lines)
