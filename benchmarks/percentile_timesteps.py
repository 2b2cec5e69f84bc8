"""Data-based normalization (Rueckauer et al. 2017): how the activation percentile that sets
each layer's threshold changes accuracy against timesteps, on the digits CNN.

    .venv/bin/python benchmarks/percentile_timesteps.py [--bits 8] [--strengths 1 15] [--seed 0]

Trains the demo CNN (``snnc demo --model cnn``), compiles it at ``--bits`` with each layer's
scale lambda set to the 99th, 99.9th, 99.99th percentile or the maximum (100) of its activations
on the training split, and prints the integer reference model's test accuracy after T
timesteps (one run per setting; see ``cnn_common``), for each maximum strength S. A lower
percentile lowers the thresholds: spikes come sooner (fewer timesteps), and the rare activations
above lambda saturate at S spikes per step.
"""

import argparse
from pathlib import Path

from cnn_common import sweep, trained_cnn, workdir

PERCENTILES = (99.0, 99.9, 99.99, 100.0)
SHOWN = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, default=8, choices=(8, 4, 2))
    ap.add_argument("--strengths", type=int, nargs="+", default=[1, 15])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-t", type=int, default=64)
    args = ap.parse_args()
    shown = [t for t in SHOWN if t <= args.max_t]
    with workdir() as tmp:
        path, ann = trained_cnn(args.seed, Path(tmp))
        acc = {p: sweep(path, bits=args.bits, strengths=args.strengths, timesteps=args.max_t,
                        percentile=p) for p in PERCENTILES}
    print(f"seed {args.seed}: float CNN {100 * ann:.2f}%; {args.bits}-bit SNN test accuracy in % "
          "after T timesteps")
    for s in args.strengths:
        print(f"\n  S={s}  percentile" + "".join(f"{'T=' + str(t):>7}" for t in shown))
        for p in PERCENTILES:
            print(f"  {p:>16g}" + "".join(f"{100 * acc[p][s][t - 1]:7.1f}" for t in shown))


if __name__ == "__main__":
    main()
