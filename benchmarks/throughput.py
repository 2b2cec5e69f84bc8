"""Where a tile's cycles go: SOPs, cycles, SOP/cycle and the split of the cycle formula.

For each bundle (default: the demo MLP and CNN that ``make demo`` and ``snnc demo --model cnn``
write), the cycle model runs the bundle's test images; the cycles are split by the formula of
docs/architecture.md section 6, and the split must add up to the model's cycles exactly before
anything is printed:

- walking stored entries that are synaptic operations (SOPs);
- walking conv taps that land outside the output or on the wrong stride phase;
- walking max-pool gate entries;
- per-event overhead (input events, spikes, the end of each population's spike walk);
- neuron sweeps with their drains, and the end-of-timestep tokens.

Today's core has one synapse lane (issue 9 asks for 2, 4 and 8).

    .venv/bin/python benchmarks/throughput.py [BUNDLE_DIR DATA.npz ...]
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from snnc.compiler.bundle import BundleError, load_bundle
from snnc.compiler.data import load_npz, quantize_inputs
from snnc.compiler.errors import SnncError
from snnc.hw.mapping import map_graph
from snnc.hw.params import TIMING, CoreParams, SourceMode
from snnc.sim.core import CoreModel

DEMOS = [("demo MLP", "build/demo/bundle", "build/demo/test.npz"),
         ("demo CNN", "build/demo-cnn/bundle", "build/demo-cnn/test.npz")]


def split(image, params, x, run, T):
    """Cycles per category (summed over the samples) for one cycle-model run."""
    pops = image.pops
    K = image.n_pops
    fan = lambda k: image.ptr_count[pops[k]["SBASE"]:pops[k]["SBASE"] + image.pop_sizes[k]]
    on_in = x != 0
    total_walk = int((on_in * fan(0)).sum()) * T
    pool_walk = 0
    overhead = int(on_in.sum()) * T * TIMING.input_event + TIMING.input_eot * T * len(x)
    sweep = TIMING.emit_eot * T * len(x)
    for k in range(1, K):
        pk = pops[k]
        sweep += (TIMING.drain + pk["SIZE"] + params.sweep_latency) * T * len(x)
        if pk["SPIKING"]:
            on = run.spikes[k - 1] != 0                       # (T, B, n)
            w = int((on * fan(k)).sum())
            total_walk += w
            if pk["SMODE"] == SourceMode.POOL:
                pool_walk += w
            overhead += TIMING.spike_done * T * len(x) + TIMING.spike_event * int(on.sum())
    sops = int(run.synops.sum())
    parts = {"SOP entries": sops, "wasted conv taps": total_walk - sops - pool_walk,
             "max-pool gate entries": pool_walk, "per-event overhead": overhead,
             "sweeps, drains, end of timestep": sweep}
    total = int(run.cycles.sum())
    if sum(parts.values()) != total:
        sys.exit(f"internal error: the split ({sum(parts.values())}) is not the cycle model's "
                 f"count ({total})")
    return parts, total


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pairs", nargs="*", help="BUNDLE_DIR DATA.npz, repeated")
    args = ap.parse_args()
    if len(args.pairs) % 2:
        ap.error("give BUNDLE_DIR DATA.npz pairs")
    cases = ([(p, p, d) for p, d in zip(args.pairs[::2], args.pairs[1::2])] if args.pairs
             else DEMOS)
    for name, bdir, data in cases:
        if not Path(bdir).is_dir() or not Path(data).is_file():
            sys.exit(f"{bdir} or {data} is missing: run `make demo` and "
                     "`.venv/bin/snnc demo --model cnn` first, or name a bundle and its data")
        try:
            bundle = load_bundle(bdir)
            x = quantize_inputs(load_npz(data)[0], bundle.meta)
        except (BundleError, SnncError) as exc:
            sys.exit(f"throughput.py: {exc}")
        x = x.reshape(len(x), -1)
        T = bundle.graph.timesteps
        params = CoreParams(**bundle.core["params"])
        image = map_graph(bundle.graph)
        run = CoreModel(params).run(image, x, T)
        parts, total = split(image, params, x, run, T)
        sops = parts["SOP entries"]
        print(f"{name} ({bdir}, {len(x)} samples, T={T}, 1 lane): {sops / len(x):,.0f} SOPs and "
              f"{total / len(x):,.0f} cycles per inference, {sops / total:.2f} SOP/cycle "
              f"({total / sops:.2f} cycles per SOP)")
        for part, cyc in parts.items():
            print(f"  {part:34s} {100 * cyc / total:5.1f}%")


if __name__ == "__main__":
    main()
