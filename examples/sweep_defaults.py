"""Measure the digits MLP's SNN accuracy over timesteps T and max strength S (how the defaults
of ``snnc compile`` were chosen).

    python examples/sweep_defaults.py [--seeds 0 1 2 3]

For each seed: trains the 64-64-10 MLP, compiles it at 8, 4 and 2 bits for every (S, T), runs the
integer reference model on the 540 test images and prints the accuracy in percent with the mean
synaptic operations per inference.
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np

from snnc.compiler.data import quantize_inputs
from snnc.compiler.pipeline import compile_model
from snnc.models.digits import accuracy, digits_split, export_model, train_digits_mlp
from snnc.sim.reference import run

STRENGTHS = (1, 3, 7, 15)
TIMESTEPS = (1, 2, 4, 8, 16)


def sweep(seed: int, tmp: Path) -> None:
    x_tr, y_tr, x_te, y_te = digits_split()
    model = train_digits_mlp(seed)
    path = export_model(model, tmp / f"digits_{seed}.pt2")
    print(f"\nseed {seed}: float ANN test accuracy {100 * accuracy(model, x_te, y_te):.1f}%")
    for bits in (8, 4, 2):
        print(f"  {bits}-bit   " + "".join(f"T={t:<13}" for t in TIMESTEPS))
        for s in STRENGTHS:
            cells = []
            for t in TIMESTEPS:
                graph, meta = compile_model(path, bits=bits, timesteps=t, max_strength=s,
                                            calib=(x_tr, y_tr))
                r = run(graph, quantize_inputs(x_te, meta))
                cells.append(f"{100 * np.mean(r.prediction == y_te):5.1f} ({r.synops.mean():6.0f})")
            print(f"  S={s:<6} " + "  ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            sweep(seed, Path(tmp))


if __name__ == "__main__":
    main()
