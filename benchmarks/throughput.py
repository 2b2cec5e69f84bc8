"""Where a tile's cycles go: SOPs, cycles, SOP/cycle and the split of the cycle formula.

For each bundle (default: the demo MLP and CNN that ``make demo`` and ``snnc demo --model cnn``
write), the cycle model runs the bundle's test images; the cycles are split by the formula of
docs/architecture.md section 6, and the split must add up to the model's cycles exactly before
anything is printed:

- walking stored entries that are synaptic operations (SOPs);
- walking conv taps that land outside the output or on the wrong stride phase;
- walking max-pool gate entries;
- per-event overhead (the fetch latency where a walk is shorter, and each phase's first fetch);
- neuron sweeps with their drains, and the end-of-timestep tokens.

Each network runs with its convolution taps listed both ways (snnc.hw.convlists): by channel
(every source of a channel walks the channel's whole list, border and stride-phase taps
included) and by class (the default: a source walks only taps that land). With no arguments it
adds a strided CNN, trained here on the digits (seed 0, one thread).

Each also runs with the input walked every timestep and once (the default: the core walks it
in the first timestep into an input-current memory and adds that in every sweep). "SOPs done"
are the synaptic operations the core performs (the input's once when it is walked once);
"reference SOPs/cycle" divides the reference model's count (the contract's, the input at every
timestep) by the same cycles.

The split is for one synapse lane. A second table runs each network (conv lists by class, input
once) at 1, 2, 4 and 8 lanes: SOPs done, cycles, SOP/cycle, SOP/cycle per lane, and the cycles
lost to membrane-bank conflicts and to a sweep group's spikes leaving one per cycle
(docs/architecture.md, "Synapse lanes"), with the membrane-bank skew snnc compile chooses. With ``--fpga BOARD``
it also compiles each network at each lane count and builds it for BOARD (``snnc build``, seed
1, several minutes per build), adding the logic (LUTs, or iCE40 logic cells) and Fmax.

    .venv/bin/python benchmarks/throughput.py [BUNDLE_DIR DATA.npz ...] [--no-strided]
                                              [--fpga ulx3s-85f]
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from snnc.compiler.bundle import BundleError, load_bundle
from snnc.compiler.data import load_npz, quantize_inputs
from snnc.compiler.errors import SnncError
from snnc.hw.mapping import core_params_for, map_graph
from snnc.hw.params import TIMING, SourceMode
from snnc.ir import Conv
from snnc.sim.core import CoreModel
from snnc.sim.reference import run as run_reference

DEMOS = [("demo MLP", "build/demo/bundle", "build/demo/test.npz"),
         ("demo CNN", "build/demo-cnn/bundle", "build/demo-cnn/test.npz")]


def split(image, params, x, run, T):
    """Cycles per category (summed over the samples) for one cycle-model run."""
    pops = image.pops
    K = image.n_pops
    fan = lambda k: image.ptr_count[pops[k]["SBASE"]:pops[k]["SBASE"] + image.pop_sizes[k]]
    on_in = x != 0
    f_in = np.broadcast_to(fan(0), x.shape)
    walks = 1 if params.input_once else T         # timesteps in which the input is walked
    total_walk = int((on_in * f_in).sum()) * walks
    pool_walk = 0
    # an event costs max(fanout, minimum): the cycles above its fan-out are overhead
    overhead = (int((on_in * (np.maximum(f_in, TIMING.input_event) - f_in)).sum()) * walks
                + TIMING.input_phase * walks * len(x))
    # input walked once: the later timesteps only consume the tokens
    tokens = (T - walks) * (int(on_in.sum()) * TIMING.input_token
                            + TIMING.input_skip_eot * len(x))
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
            overhead += (TIMING.spike_phase * T * len(x)
                         + int((on * (np.maximum(fan(k), TIMING.spike_event) - fan(k))).sum()))
    sops = int(run.synops.sum())
    parts = {"SOP entries": sops, "wasted conv taps": total_walk - sops - pool_walk,
             "max-pool gate entries": pool_walk, "per-event overhead": overhead,
             "input tokens after the first timestep": tokens,
             "sweeps, drains, end of timestep": sweep}
    total = int(run.cycles.sum())
    if sum(parts.values()) != total:
        sys.exit(f"internal error: the split ({sum(parts.values())}) is not the cycle model's "
                 f"count ({total})")
    return parts, total


class StridedCNN(nn.Module):
    """A small CNN whose convolutions are strided: 8x8 -> 4x4 -> 2x2, then linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(torch.flatten(x, 1))


def strided_case():
    """The strided CNN trained on the digits (seed 0, one thread), compiled at 4 bits, T=2."""
    from snnc.compiler.pipeline import compile_module
    from snnc.models.digits import fit, one_thread
    from snnc.models.digits_cnn import cnn_split
    x_tr, y_tr, x_te, _ = cnn_split()
    with one_thread():
        model = fit(StridedCNN, x_tr, y_tr, seed=0, epochs=30, batch_size=32, lr=3e-3)
    ((g, meta),) = compile_module(model, [{"bits": 4, "timesteps": 2, "max_strength": 15}],
                                  calib=(x_tr, y_tr), input_shape=(1, 8, 8))
    return g, quantize_inputs(x_te, meta).reshape(len(x_te), -1)


def measure(graph, x, layout, input_once):
    T = graph.timesteps
    image = map_graph(graph, layout)
    params = core_params_for(image, timesteps=T, input_once=input_once)
    run = CoreModel(params).run(image, x, T)
    parts, total = split(image, params, x, run, T)
    return image, parts, total


def measure_lanes(graph, x, lanes):
    """The default compile (class lists, input once, the bank skew snnc compile chooses) at
    ``lanes`` lanes, on the cycle model."""
    from snnc.compiler.banks import choose_bank_skew
    T = graph.timesteps
    skew = choose_bank_skew(graph, "class", lanes)
    image = map_graph(graph, "class", lanes, skew)
    params = core_params_for(image, timesteps=T, input_once=True)
    run = CoreModel(params).run(image, x, T)
    return (image, skew, int(run.synops.sum()), int(run.cycles.sum()),
            int(run.bank_stalls.sum()), int(run.sweep_stalls.sum()))


def fpga_figures(graph, lanes, board, work):
    """LUTs (or logic cells) and Fmax of the network's default compile at ``lanes`` lanes,
    built for ``board`` by ``snnc build`` (seed 1)."""
    import json
    import subprocess
    from snnc.compiler.bundle import write_bundle
    bdir, out = work / f"bundle-{lanes}", work / f"build-{lanes}"
    write_bundle(bdir, graph, {}, lanes=lanes)
    done = subprocess.run([sys.executable, "-m", "snnc", "build", str(bdir), "--board", board,
                           "-o", str(out)], capture_output=True, text=True)
    if done.returncode:
        return None, None, done.stderr.strip().splitlines()[-1] if done.stderr else "failed"
    rep = json.loads((out / "build.json").read_text())
    util = rep["utilization"]
    logic = next((v["used"] for k, v in util.items() if k in ("TRELLIS_COMB", "ICESTORM_LC")), None)
    return logic, rep["fmax"]["achieved_mhz"], ""


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pairs", nargs="*", help="BUNDLE_DIR DATA.npz, repeated")
    ap.add_argument("--no-strided", action="store_true",
                    help="skip the strided CNN (trained here, about 10 s)")
    ap.add_argument("--lanes", default="1,2,4,8",
                    help="lane counts of the lanes table (default 1,2,4,8)")
    ap.add_argument("--fpga", metavar="BOARD",
                    help="also build every network at every lane count for BOARD (snnc build "
                         "--board BOARD) and report its logic and Fmax")
    args = ap.parse_args()
    if len(args.pairs) % 2:
        ap.error("give BUNDLE_DIR DATA.npz pairs")
    cases = ([(p, p, d) for p, d in zip(args.pairs[::2], args.pairs[1::2])] if args.pairs
             else DEMOS)
    nets = []
    for name, bdir, data in cases:
        if not Path(bdir).is_dir() or not Path(data).is_file():
            sys.exit(f"{bdir} or {data} is missing: run `make demo` and "
                     "`.venv/bin/snnc demo --model cnn` first, or name a bundle and its data")
        try:
            bundle = load_bundle(bdir)
            x = quantize_inputs(load_npz(data)[0], bundle.meta)
        except (BundleError, SnncError) as exc:
            sys.exit(f"throughput.py: {exc}")
        nets.append((f"{name} ({bdir})", bundle.graph, x.reshape(len(x), -1)))
    if not args.pairs and not args.no_strided:
        g, x = strided_case()
        nets.append(("strided CNN (3x3 stride 2, twice; trained here)", g, x))
    rows = []
    configs = [("channel", False, "per channel, input every timestep"),
               ("class", False, "by class, input every timestep"),
               ("class", True, "by class, input once (default)")]
    for name, g, x in nets:
        print(f"{name}: {len(x)} samples, T={g.timesteps}, 1 lane")
        has_conv = any(isinstance(p, Conv) for p in g.projections)
        for layout, once, label in configs:
            if not has_conv and layout == "channel":
                continue                       # the same lists for a network without conv
            image, parts, total = measure(g, x, layout, once)
            sops = parts["SOP entries"]
            print(f"  conv lists {label}: {sops / len(x):,.0f} SOPs and "
                  f"{total / len(x):,.0f} cycles per inference, {sops / total:.2f} SOP/cycle "
                  f"({total / sops:.2f} cycles per SOP); {image.n_entries:,} synapse entries")
            for part, cyc in parts.items():
                print(f"    {part:38s} {100 * cyc / total:5.1f}%")
            contract = int(run_reference(g, x).synops.sum())
            rows.append((name.split(" (")[0], layout if has_conv else "-",
                         "once" if once else "every timestep", sops / len(x), total / len(x),
                         sops / total, contract / total,
                         100 * parts["wasted conv taps"] / total, image.n_entries))
    print("\n| network | conv lists | input walked | SOPs done | cycles | SOP/cycle | "
          "reference SOPs/cycle | wasted taps | synapse entries |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, layout, walk, sops, cyc, rate, eff, wasted, entries in rows:
        print(f"| {name} | {layout} | {walk} | {sops:,.0f} | {cyc:,.0f} | {rate:.2f} | "
              f"{eff:.2f} | {wasted:.1f}% | {entries:,} |")

    import tempfile
    fpga = f" | logic ({args.fpga}) | Fmax" if args.fpga else ""
    print("\nSynapse lanes (conv lists by class, input once):\n")
    print("| network | lanes | bank skew | SOPs done | cycles | SOP/cycle | SOP/cycle per lane | "
          f"bank-conflict stalls | sweep spike stalls | synapse entries{fpga} |")
    print("|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if args.fpga else ""))
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, g, x) in enumerate(nets):
            for lanes in [int(v) for v in args.lanes.split(",")]:
                image, skew, sops, cyc, stalls, sweep = measure_lanes(g, x, lanes)
                extra = ""
                if args.fpga:
                    work = Path(tmp) / f"net{i}"
                    logic, fmax, why = fpga_figures(g, lanes, args.fpga, work)
                    extra = (f" | {logic:,} | {fmax:.1f} MHz" if logic is not None
                             else f" | does not build: {why} | - ")
                print(f"| {name.split(' (')[0]} | {lanes} | {skew} | {sops / len(x):,.0f} | "
                      f"{cyc / len(x):,.0f} | {sops / cyc:.2f} | {sops / cyc / lanes:.2f} | "
                      f"{stalls / len(x):,.1f} ({100 * stalls / cyc:.1f}%) | "
                      f"{sweep / len(x):,.1f} ({100 * sweep / cyc:.1f}%) | "
                      f"{image.n_entries:,}{extra} |", flush=True)


if __name__ == "__main__":
    main()
