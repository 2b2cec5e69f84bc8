"""Cycle-accurate Python simulator vs. RTL simulation (Verilator driven by cocotb), one run.

Both simulate the same workload: a digits-sized MLP (64-64-10, 4-bit weights, 60 % dense,
graded spikes up to 7), the same samples, the same timesteps. Both must agree bit for bit
(events, membranes, counters, cycle counts) before any figure is printed.

    .venv/bin/python benchmarks/cycle_sim_vs_verilator.py [--samples 40] [--timesteps 16]
"""

import argparse
import time

import numpy as np
from amaranth.back import verilog

from snnc.hw.core import Core
from snnc.hw.mapping import core_params_for, map_graph
from snnc.ir import Dense, Graph, InputPopulation, Population, verify
from snnc.ir.verify import input_current_bounds
from snnc.rtl import runner
from snnc.rtl.verify import run_networks
from snnc.sim.core import CoreModel


def workload(seed, timesteps):
    rng = np.random.default_rng(seed)
    sizes = [64, 64, 10]
    projs = [Dense(k - 1, k, rng.integers(-7, 8, (sizes[k], sizes[k - 1])) *
                   (rng.random((sizes[k], sizes[k - 1])) < 0.6), 4) for k in (1, 2)]
    pops = (Population("hidden", 64, rng.integers(-40, 40, 64), 400, 7, 0, 1),
            Population("readout", 10, rng.integers(-5, 5, 10), 1, 1, 0, 0, spiking=False))
    g = Graph(InputPopulation("in", (64,), False), pops, tuple(projs), timesteps)
    fixed = []
    for k, p in enumerate(pops, start=1):
        neg, pos = input_current_bounds(g, k)
        P = int(max(pos.max(), -neg.min(), 1))
        scale = 1 if p.spiking else timesteps
        fixed.append(Population(p.name, p.size, p.bias, p.theta, p.s_max, -P * scale,
                                max(P * scale, p.theta), p.spiking))
    return verify(g.replace(populations=tuple(fixed)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--timesteps", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    g = workload(args.seed, args.timesteps)
    rng = np.random.default_rng(args.seed + 1)
    xs = rng.integers(0, 256, (args.samples, 64)) * (rng.random((args.samples, 64)) < 0.6)
    image = map_graph(g)
    params = core_params_for(image)
    v = verilog.convert(Core(params), name="snnc_core")
    t0 = time.perf_counter()
    runner.build(v, params)
    build_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    [(model, mism, got)] = run_networks([(g, xs, args.timesteps)], params, v)
    rtl_s = time.perf_counter() - t0
    if any(mism):
        raise SystemExit(f"RTL and model disagree: {mism}")
    rtl_cycles = sum(s["wall_cycles"] for s in got)

    reps = 20
    t0 = time.perf_counter()
    for _ in range(reps):
        run = CoreModel(params).run(image, xs, args.timesteps)
    model_s = (time.perf_counter() - t0) / reps
    model_cycles = int(run.cycles.sum()) + len(xs) * (run.clear_cycles + 2)
    assert np.array_equal(run.cycles, model.cycles)

    rtl_rate, model_rate = rtl_cycles / rtl_s, model_cycles / model_s
    print(f"workload: 64-64-10 MLP, 4-bit, {args.samples} samples x T={args.timesteps}, "
          f"{int(model.cycles.sum())} active cycles in all; results bit-exact")
    print(f"verilator build (cached after the first run): {build_s:.1f} s")
    print(f"RTL (Verilator + cocotb): {rtl_cycles} cycles in {rtl_s:.2f} s = {rtl_rate:,.0f} cycles/s")
    print(f"cycle model (snnc.sim.core): {model_cycles} cycles in {model_s * 1e3:.1f} ms = "
          f"{model_rate:,.0f} cycles/s")
    print(f"ratio: cycle model is {model_rate / rtl_rate:,.0f}x faster than Verilator")


if __name__ == "__main__":
    main()
