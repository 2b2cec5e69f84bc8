"""Multi-strength spikes (M-SNN) against binary spikes on the digits CNN: how many timesteps
each maximum strength S needs to come within 1 point of the float network.

    .venv/bin/python benchmarks/mstrength_convergence.py [--bits 8] [--seeds 0] [--max-t 128]

For each training seed: trains the demo CNN (``snnc demo --model cnn``), compiles it at
``--bits`` for S = 1, 3, 7, 15, runs the integer reference model on the 540 test images and
reports the accuracy after every T up to ``--max-t`` (one run per S; see ``cnn_common``), the
smallest T whose accuracy is within 1 point of the float CNN, and the speedup of each S > 1 over
binary spikes (S = 1) in timesteps. Chen et al. 2018 report 3.7x for their multi-strength
spikes.
"""

import argparse
from pathlib import Path

import numpy as np

from cnn_common import sweep, trained_cnn, workdir

STRENGTHS = (1, 3, 7, 15)
SHOWN = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)


def first_within(acc: np.ndarray, target: float):
    hits = np.nonzero(acc >= target - 1e-12)[0]
    return int(hits[0]) + 1 if len(hits) else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, default=8, choices=(8, 4, 2))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--max-t", type=int, default=128)
    args = ap.parse_args()
    firsts = []
    with workdir() as tmp:
        for seed in args.seeds:
            path, ann = trained_cnn(seed, Path(tmp))
            acc = sweep(path, bits=args.bits, strengths=STRENGTHS, timesteps=args.max_t)
            target = ann - 0.01
            print(f"\nseed {seed}: float CNN {100 * ann:.2f}%, target {100 * target:.2f}% "
                  f"(within 1 point); {args.bits}-bit SNN test accuracy in % after T timesteps:")
            shown = [t for t in SHOWN if t <= args.max_t]
            print("  S    " + "".join(f"{'T=' + str(t):>7}" for t in shown) + "   smallest T")
            first = {}
            for s in STRENGTHS:
                first[s] = first_within(acc[s], target)
                cells = "".join(f"{100 * acc[s][t - 1]:7.1f}" for t in shown)
                print(f"  {s:<4} {cells}   {first[s] if first[s] else f'> {args.max_t}'}")
            firsts.append(first)
            base = first[1]
            for s in STRENGTHS[1:]:
                if base and first[s]:
                    print(f"  S={s}: {first[s]} timestep(s) vs {base} for S=1: "
                          f"{base / first[s]:.1f}x fewer")
                else:
                    print(f"  S={s}: {first[s] or f'> {args.max_t}'} timesteps vs "
                          f"{base or f'> {args.max_t}'} for S=1")

    if len(firsts) > 1 and all(all(f.values()) for f in firsts):
        mean = {s: np.mean([f[s] for f in firsts]) for s in STRENGTHS}
        print(f"\nover seeds {' '.join(map(str, args.seeds))}: mean smallest T " + ", ".join(
            f"S={s}: {mean[s]:.2f}" for s in STRENGTHS) + "; speedup over S=1 (ratio of means) "
            + ", ".join(f"S={s}: {mean[1] / mean[s]:.1f}x" for s in STRENGTHS[1:]))


if __name__ == "__main__":
    main()
