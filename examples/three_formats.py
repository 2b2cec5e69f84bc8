"""Save one trained network in the three model formats snnc accepts, plus data files.

    python examples/three_formats.py build/example

writes, into the given directory (default ``build/example``):

    digits.pt2        torch.export ExportedProgram (recommended: loading runs no code)
    digits_state.pt   model.state_dict()           (compile with --arch snnc.models.digits:DigitsMLP)
    digits_full.pt    torch.save(model)            (compile with --trust-model: unpickling runs code)
    calib.npz         calibration inputs x and labels y (the training split)
    test.npz          the test split

and prints the snnc commands that compile and simulate each of them.
"""

import sys
from pathlib import Path

import torch

from snnc.models.digits import accuracy, digits_split, save_split, train_digits_mlp


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model = train_digits_mlp(seed=0)
    _, _, x_test, y_test = digits_split()
    print(f"float test accuracy: {accuracy(model, x_test, y_test):.2%}")

    # 1. ExportedProgram: the network's structure and weights, no Python code.
    example = torch.zeros(2, 64)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, out / "digits.pt2")
    # 2. state_dict: weights only; the structure comes from the class named by --arch.
    torch.save(model.state_dict(), out / "digits_state.pt")
    # 3. The whole pickled module: loading it runs code named in the file.
    torch.save(model, out / "digits_full.pt")
    save_split(out)

    print("\ncompile and simulate:")
    for name, extra in (("digits.pt2", ""),
                        ("digits_state.pt", " --arch snnc.models.digits:DigitsMLP"),
                        ("digits_full.pt", " --trust-model")):
        bundle = out / ("bundle_" + name.split(".")[0])
        print(f"  snnc compile {out / name}{extra} --bits 4 --calib {out / 'calib.npz'} -o {bundle}")
        print(f"  snnc simulate {bundle} --data {out / 'test.npz'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("build/example"))
