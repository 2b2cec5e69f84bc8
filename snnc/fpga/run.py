"""Run a bundle's samples on a board (``snnc run-board``) and compare them bit for bit.

The host loads the bundle's own memory images over the UART (:mod:`snnc.hw.images`), runs each
sample and reads back every output event, every membrane and the counters; they are compared
with ``==`` against the cycle model, which equals the reference model.
"""

from __future__ import annotations

import numpy as np

from ..hw.images import config_writes_from_images
from ..hw.mapping import map_graph
from ..hw.params import CoreParams, Counter
from ..sim.core import CoreModel

__all__ = ["board_mismatches", "run_on_board"]


def board_mismatches(model, b: int, got: dict) -> list[str]:
    """What differs between the cycle model's sample ``b`` and a board's answer ``got``."""
    out = []
    want = [list(map(int, e)) for e in model.events[b]]
    if [list(map(int, e)) for e in got["events"]] != want:
        out.append(f"output events differ ({len(want)} expected, {len(got['events'])} received)")
    if "membranes" in got and list(got["membranes"]) != model.v_final[b].tolist():
        n = next(i for i, (a, c) in enumerate(zip(model.v_final[b].tolist(), got["membranes"]))
                 if a != c) if len(got["membranes"]) == model.v_final.shape[1] else None
        out.append("final membranes differ" + (f" (first at neuron {n})" if n is not None else ""))
    cnt = got["counters"]
    checks = [("active cycles", int(model.cycles[b]), cnt[Counter.ACTIVE]),
              ("synaptic ops", int(model.synops[b]), cnt[Counter.SYNOPS]),
              ("timesteps", len(model.cycles_per_timestep[b]), cnt[Counter.TIMESTEP])]
    checks += [(f"spikes of population {k}", int(model.spike_counts[b, k]), cnt[Counter.SPIKES + k])
               for k in range(1, model.spike_counts.shape[1])]
    out += [f"{name}: expected {a}, got {c}" for name, a, c in checks if a != c]
    return out


def run_on_board(client, bundle, x_int, *, timesteps: int | None = None) -> dict:
    """Run ``x_int`` on the board behind ``client`` (a :class:`snnc.fpga.host.BoardClient`).

    Returns ``{"samples": [...], "all_exact": bool}``; each sample has the board's prediction,
    its cycle counter and the mismatches against the cycle model (empty when bit-exact).
    """
    params = CoreParams(**bundle.core["params"])
    T = bundle.graph.timesteps if timesteps is None else int(timesteps)
    x = np.asarray(x_int, dtype=np.int64).reshape(len(x_int), -1)
    writes = config_writes_from_images(bundle.path, bundle.core, params, T)
    model = CoreModel(params).run(map_graph(bundle.graph), x, T)
    got = client.run_samples(writes, x, T)
    samples = []
    for b, g in enumerate(got):
        mism = board_mismatches(model, b, g)
        samples.append({"sample": b, "exact": not mism, "mismatches": mism,
                        "prediction": g["prediction"], "cycles": int(g["counters"][Counter.ACTIVE])})
    return {"samples": samples, "all_exact": all(s["exact"] for s in samples) and bool(samples)}
