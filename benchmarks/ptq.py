"""Post-training quantization remedies, measured: accuracy of the integer SNN on the digits test
split (540 images, the integer reference = the RTL) at 8, 4 and 2 bits, without and with
cross-layer equalization (``snnc compile --equalize``) and bias correction
(``--bias-correct``), and both, for the demo MLP (T=4) and the demo
CNN (T=2), S=15, calibrated on the demo calibration sets. The float accuracy is given for
reference.

    .venv/bin/python benchmarks/ptq.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from snnc.compiler.data import load_npz, quantize_inputs
from snnc.compiler.extract import extract_layers
from snnc.compiler.load import load_model
from snnc.compiler.pipeline import compile_model
from snnc.sim.reference import run

NETS = [("demo MLP", "build/demo/digits_mlp.pt2", "build/demo", 4),
        ("demo CNN", "build/demo-cnn/digits_cnn.pt2", "build/demo-cnn", 2)]


def main():
    torch.set_num_threads(1)
    print("| network | float | bits | plain | --equalize | --bias-correct | both |")
    print("|---|---|---|---|---|---|---|")
    for name, model, d, T in NETS:
        if not Path(model).is_file():
            sys.exit(f"{model} is missing: run `make demo` and `.venv/bin/snnc demo --model cnn`")
        x, y = load_npz(f"{d}/test.npz")
        net = extract_layers(load_model(model).module)
        flt = float(np.mean(net.forward(x).argmax(axis=1) == y))
        for bits in (8, 4, 2):
            accs = []
            for eq, bc in ((False, False), (True, False), (False, True), (True, True)):
                g, meta = compile_model(model, bits=bits, timesteps=T, max_strength=15,
                                        calib=f"{d}/calib.npz", equalize=eq, bias_correct=bc,
                                        evaluate=False)
                r = run(g, quantize_inputs(x, meta).reshape(len(x), -1))
                accs.append(float(np.mean(r.prediction == y)))
            print(f"| {name} | {flt:.2%} | {bits} | " + " | ".join(f"{a:.2%}" for a in accs)
                  + " |", flush=True)


if __name__ == "__main__":
    main()
