"""The core's cost follows sparsity: the demo CNN magnitude-pruned to 0%, 50%, 90% and 99%.

Each row compiles ``build/demo-cnn/digits_cnn.pt2`` as the CNN demo does (4 bits, T=2, S=15,
calibrated on ``build/demo-cnn/calib.npz``) with ``snnc compile --prune F`` (each layer to F,
before calibration, without fine-tuning), then runs the bundle's test images
(``build/demo-cnn/test.npz``, 540) on the integer reference (accuracy) and on the cycle model
(one lane, the default compile: conv lists by class, input walked once). It prints:

- the nonzero weights after quantization (kernel weights for convolutions, max-pool members
  included) and the synapse entries the core stores (convolution taps listed by class);
- accuracy;
- synaptic operations per inference (what the core does);
- cycles per inference, and their share of the unpruned network's;
- memory bits: *used* (words the network occupies times their width,
  ``snnc.hw.mapping.memory_bits``) and *allocated* (every memory of the generated core, depth
  times width, ``snnc.compiler.budget.memory_shapes``).

Zero weights are neither stored nor walked, so cycles and memory fall with the synapses; what
stays is per neuron (sweeps, membranes) and per event.

    .venv/bin/python benchmarks/sparsity.py [--fractions 0,0.5,0.9,0.99] [--scope layer|global]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from snnc.compiler.budget import memory_shapes
from snnc.compiler.data import load_npz, quantize_inputs
from snnc.compiler.pipeline import compile_model
from snnc.hw.mapping import core_params_for, map_graph, memory_bits
from snnc.sim.core import CoreModel
from snnc.sim.reference import run

MODEL = Path("build/demo-cnn/digits_cnn.pt2")
CALIB = Path("build/demo-cnn/calib.npz")
TEST = Path("build/demo-cnn/test.npz")


def measure(fraction: float, scope: str, x, y):
    graph, meta = compile_model(MODEL, bits=4, timesteps=2, max_strength=15, calib=CALIB,
                                prune=fraction, prune_scope=scope, evaluate=False)
    xq = quantize_inputs(x, meta).reshape(len(x), -1)
    ref = run(graph, xq)
    acc = float(np.mean(ref.prediction == y))
    image = map_graph(graph)
    params = core_params_for(image, timesteps=graph.timesteps, input_once=True)
    cyc = CoreModel(params).run(image, xq, graph.timesteps)
    used = sum(memory_bits(image, params).values())
    allocated = sum(d * w for d, w in memory_shapes(params).values())
    return {"weights": graph.nnz, "entries": image.n_entries, "accuracy": acc, "sops": float(cyc.synops.mean()),
            "cycles": float(cyc.cycles.mean()), "used": used, "allocated": allocated}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fractions", default="0,0.5,0.9,0.99")
    ap.add_argument("--scope", choices=("layer", "global"), default="layer")
    args = ap.parse_args()
    for f in (MODEL, CALIB, TEST):
        if not f.is_file():
            sys.exit(f"{f} is missing: run `.venv/bin/snnc demo --model cnn` first")
    torch.set_num_threads(1)
    x, y = load_npz(TEST)
    rows = [(float(f), measure(float(f), args.scope, x, y)) for f in args.fractions.split(",")]
    dense = rows[0][1]
    print(f"demo CNN, 4 bits, T=2, S=15, pruned per {args.scope}, {len(x)} test images, "
          "cycle model (1 lane)\n")
    print("| pruned | nonzero weights | synapse entries | accuracy | SOPs | cycles | "
          "cycles vs unpruned | memory bits used | memory bits allocated |")
    print("|---|---|---|---|---|---|---|---|---|")
    for f, r in rows:
        print(f"| {f:.0%} | {r['weights']:,} | {r['entries']:,} | "
              f"{r['accuracy']:.2%} | {r['sops']:,.0f} | {r['cycles']:,.0f} | "
              f"{r['cycles'] / dense['cycles']:.1%} | {r['used']:,} | {r['allocated']:,} |")


if __name__ == "__main__":
    main()
