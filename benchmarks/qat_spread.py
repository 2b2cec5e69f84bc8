"""Spread of 2-bit quantization-aware training on the digits CNN over training seeds.

For every seed: train the float CNN (as ``snnc demo --model cnn``), fine-tune it for ternary
weights with :func:`snnc.models.qat.finetune` exactly as the demo does (T = 1 levels, the epoch
chosen by the compiled SNN at the demo's T = 2), compile the result at 2 bits and run the
reference model on the 540 test images. Prints one line per seed, then the mean and range of
the gap to the float network at T = 2 (the demo's bar: within 5 points).

Floating-point results differ between CPUs (torch picks vector kernels by the CPU), so a run
on another machine draws other trajectories. To see that spread on one machine, run it again
with torch's and oneDNN's portable kernels::

    .venv/bin/python benchmarks/qat_spread.py --seeds 0 1 2 3 4
    ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 .venv/bin/python benchmarks/qat_spread.py --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from snnc.compiler.data import check_samples, quantize_inputs
from snnc.compiler.pipeline import compile_variants
from snnc.models.digits import accuracy
from snnc.models.digits_cnn import (CNN_MAX_STRENGTH, CNN_TIMESTEPS, cnn_split, export_cnn,
                                    save_cnn_split, train_digits_cnn)
from snnc.models.qat import finetune
from snnc.sim.reference import run

STEPS = (1, 2, 4, 8)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = ap.parse_args(argv)
    kernels = (os.environ.get("ATEN_CPU_CAPABILITY", "auto"),
               os.environ.get("ONEDNN_MAX_CPU_ISA", "auto"))
    print(f"2-bit QAT on the digits CNN, S={CNN_MAX_STRENGTH}; torch kernels {kernels[0]}, "
          f"oneDNN ISA {kernels[1]}", flush=True)
    out = Path(tempfile.mkdtemp(prefix="snnc-qat-"))
    calib, _ = save_cnn_split(out)
    x_tr, y_tr, x_te, y_te = cnn_split()
    gaps = []
    for seed in args.seeds:
        start = time.perf_counter()
        model = train_digits_cnn(seed)
        ann = accuracy(model, x_te, y_te)
        qnet = finetune(model, x_tr, y_tr, bits=2, timesteps=1, max_strength=CNN_MAX_STRENGTH,
                        select_timesteps=CNN_TIMESTEPS, seed=seed)
        path = export_cnn(qnet, out / f"qat{seed}.pt2")
        accs = {}
        for (graph, meta), t in zip(compile_variants(
                path, [{"bits": 2, "timesteps": t, "max_strength": CNN_MAX_STRENGTH}
                       for t in STEPS], calib=calib), STEPS):
            x_int = quantize_inputs(check_samples(x_te, graph.input.shape), meta)
            accs[t] = float(np.mean(run(graph, x_int).prediction == y_te))
        gap = 100 * (ann - accs[CNN_TIMESTEPS])
        gaps.append(gap)
        info = qnet.meta["snnc_qat"]
        print(f"seed {seed}: float {100 * ann:.2f}%, 2-bit SNN " +
              ", ".join(f"T={t} {100 * a:.1f}%" for t, a in accs.items()) +
              f"; gap at T={CNN_TIMESTEPS} {gap:.2f} points (epoch {info['epoch']}, "
              f"{time.perf_counter() - start:.0f} s)", flush=True)
    g = np.array(gaps)
    print(f"gap at T={CNN_TIMESTEPS} over {len(g)} seeds: mean {g.mean():.2f}, "
          f"range {g.min():.2f} to {g.max():.2f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
