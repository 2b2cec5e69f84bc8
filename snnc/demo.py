"""The demo: train a digits network, compile it, check it on the reference and the RTL.

``snnc demo`` (the 64-64-10 MLP) and ``snnc demo --model cnn`` (a residual CNN); the command
line itself is in :mod:`snnc.cli`, whose helpers this module reuses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .cli import _files, _print_counters, counters_report, simulate
from .compiler.bundle import write_bundle
from .compiler.data import check_samples, quantize_inputs
from .compiler.errors import SnncError
from .compiler.pipeline import DEFAULT_MAX_STRENGTH, DEFAULT_TIMESTEPS, compile_model
from .ir import Graph
from .models.digits_cnn import CNN_MAX_STRENGTH, CNN_TIMESTEPS

__all__ = ["demo_reference", "cnn_demo_reference", "cmd_demo"]



def demo_reference(out: Path, *, bits: int, timesteps: int, max_strength: int,
                   seed: int = 0) -> dict:
    """The demo up to the reference model: train, export, compile, run the test split.

    Writes ``digits_mlp.pt2``, ``calib.npz`` (training split) and ``test.npz`` into ``out`` and
    returns the float and SNN test accuracies, the graph, its metadata, the quantized test inputs
    and the counters report.
    """
    from .models.digits import accuracy, digits_split, export_model, save_split, train_digits_mlp

    out = Path(out)
    model = train_digits_mlp(seed)
    _, _, x_te, y_te = digits_split()
    ann = accuracy(model, x_te, y_te)
    model_path = export_model(model, out / "digits_mlp.pt2")
    calib_path, _ = save_split(out)
    graph, meta = compile_model(model_path, bits=bits, timesteps=timesteps,
                                max_strength=max_strength, calib=calib_path)
    x_int = quantize_inputs(check_samples(x_te, graph.input.shape), meta)
    res = simulate(graph, x_int, progress=False)
    report = counters_report(graph, res, y_te)
    return {"ann_accuracy": ann, "snn_accuracy": report["accuracy"], "graph": graph,
            "meta": meta, "x_int": x_int, "y": y_te, "report": report, "model_path": model_path}


def _rtl_step(bundle, x_int: np.ndarray, n: int) -> bool:
    from .rtl.runner import SimulatorMissing
    from .rtl.verify import verify_on_rtl

    print(f"  running {n} test images on the RTL ...", flush=True)
    try:
        rtl = verify_on_rtl(bundle, x_int[:n], timesteps=None, progress=True)
    except SimulatorMissing as exc:
        raise SnncError(f"{exc}; or skip the RTL step with --rtl-samples 0") from None
    except RuntimeError as exc:   # the HDL build or the cocotb run itself failed
        raise SnncError(f"the RTL simulation did not complete: {exc}") from None
    print(f"  {rtl.summary()}")
    for line in rtl.mismatches[:10]:
        print(f"    {line}")
    if len(rtl.mismatches) > 10:
        print(f"    ... and {len(rtl.mismatches) - 10} more mismatches")
    return bool(rtl.all_exact)


def cnn_demo_reference(out: Path, *, bits: int = 4, timesteps: int = CNN_TIMESTEPS,
                       max_strength=CNN_MAX_STRENGTH, seed: int = 0, table_bits=(8, 4, 2),
                       table_timesteps=(1, 2, 4, 8), qat: bool = True) -> dict:
    """The CNN demo up to the reference model: train, export, compile, run the test split.

    Writes ``digits_cnn.pt2``, ``calib.npz`` and ``test.npz`` into ``out``; compiles the CNN for
    every bits in ``table_bits`` and T in ``table_timesteps`` (plus ``bits``/``timesteps``) and
    runs the reference model on the 540 test images. Returns the float accuracy, the ``table``
    ``{(bits, T): (accuracy, mean synaptic ops)}``, and, for ``bits`` at ``timesteps``, the graph,
    metadata, quantized test inputs, labels and counters report (as :func:`demo_reference`).

    With ``qat`` and 2 in ``table_bits`` (or ``bits == 2``) it also fine-tunes the CNN with
    quantization-aware training for ternary weights (:func:`snnc.models.qat.finetune`, at T = 1,
    where the quantized ANN and the SNN agree, keeping the epoch whose compiled SNN at
    ``timesteps`` does best on the training split; never the test split), writes ``digits_cnn_qat2.pt2``, and adds rows
    ``("2qat", T)`` to the table; a 2-bit demo network (``bits == 2``) is then the QAT one.
    """
    from .models.digits import one_thread

    # The CNN's layers are tiny: torch's thread pool only costs time (a lot on a busy machine).
    with one_thread():
        return _cnn_demo_reference(Path(out), bits, timesteps, max_strength, seed, table_bits,
                                   table_timesteps, qat)


def _cnn_demo_reference(out, bits, timesteps, max_strength, seed, table_bits, table_timesteps,
                        qat):
    from .compiler.pipeline import compile_variants
    from .models.digits import accuracy
    from .models.digits_cnn import cnn_split, export_cnn, save_cnn_split, train_digits_cnn

    model = train_digits_cnn(seed)
    _, _, x_te, y_te = cnn_split()
    ann = accuracy(model, x_te, y_te)
    model_path = export_cnn(model, out / "digits_cnn.pt2")
    calib_path, _ = save_cnn_split(out)
    settings = [(b, t) for b in sorted(set(table_bits) | {bits}, reverse=True)
                for t in sorted(set(table_timesteps) | {timesteps})]
    runs = [(model_path, b, t, b) for b, t in settings]
    extra = {}
    if qat and 2 in set(table_bits) | {bits}:
        from .models.qat import finetune
        x_tr, y_tr, _, _ = cnn_split()
        qnet = finetune(model, x_tr, y_tr, bits=2, timesteps=1, max_strength=max_strength,
                        select_timesteps=timesteps, seed=seed)
        qat_path = export_cnn(qnet, out / "digits_cnn_qat2.pt2")
        steps = sorted(set(table_timesteps) | {timesteps})
        runs += [(qat_path, 2, t, "2qat") for t in steps]
        extra = {"qat_path": qat_path, "qat_ann_accuracy": accuracy(qnet, x_te, y_te)}
    table, r = {}, {}
    for path in dict.fromkeys(p for p, *_ in runs):
        mine = [run for run in runs if run[0] == path]
        # evaluate=False: the table measures every variant on the test split below, so the
        # compiler's own run on the calibration (training) split would only double the time.
        compiled = compile_variants(path, [{"bits": b, "timesteps": t, "max_strength": max_strength}
                                           for _, b, t, _ in mine], calib=calib_path,
                                    evaluate=False)
        for (_, b, t, row), (graph, meta) in zip(mine, compiled):
            x_int = quantize_inputs(check_samples(x_te, graph.input.shape), meta)
            res = simulate(graph, x_int, progress=False)
            report = counters_report(graph, res, y_te)
            table[(row, t)] = (report["accuracy"], report["mean"]["synops"])
            demo_row = "2qat" if bits == 2 and extra else bits
            if (row, t) == (demo_row, timesteps):
                r = {"graph": graph, "meta": meta, "x_int": x_int, "report": report,
                     "snn_accuracy": report["accuracy"]}
    return {"ann_accuracy": ann, "table": table, "y": y_te, "model_path": model_path, **extra, **r}


def _write_demo_bundle(path: Path, graph: Graph, meta: dict, rtl_samples: int):
    from .hw.mapping import MappingError

    try:
        return write_bundle(path, graph, meta, hardware=True)
    except MappingError as exc:
        if rtl_samples:
            raise SnncError(f"the network does not map onto the core: {exc}") from None
        print(f"  note: no hardware in the bundle: {exc}")
        return write_bundle(path, graph, meta, hardware=False)


def _print_table(table: dict, ann: float, timesteps: int) -> None:
    """The ``{(bits, T): (accuracy, synops)}`` table; ``*`` marks the demo's T."""
    bits = sorted({b for b, _ in table if isinstance(b, int)}, reverse=True)
    rows = bits + ["2qat"] * any(b == "2qat" for b, _ in table)
    steps = sorted({t for _, t in table})
    print(f"  SNN reference test accuracy in % (float ANN {100 * ann:.2f}; * = T={timesteps}; "
          f"2qat = 2 bits after quantization-aware fine-tuning):")
    print("    bits " + "".join(f"{'T=' + str(t):>8}" for t in steps))
    for b in rows:
        cells = ["*" * (t == timesteps) + f"{100 * table[(b, t)][0]:.1f}" if (b, t) in table
                 else "-" for t in steps]
        print(f"    {b:>4} " + "".join(f"{c:>8}" for c in cells))
    print("    mean synaptic operations per inference at " + ", ".join(
        f"T={t}: {table[(bits[0], t)][1]:,.0f}" for t in steps) + f" ({bits[0]}-bit)")


def _demo_cnn(args, out: Path) -> int:
    T = CNN_TIMESTEPS if args.timesteps is None else args.timesteps
    S = CNN_MAX_STRENGTH if args.max_strength is None else args.max_strength
    print(f"snnc demo --model cnn: residual CNN on scikit-learn digits (seed {args.seed}): "
          f"conv-BN-ReLU-maxpool, residual block, conv-BN-ReLU-avgpool, linear; S={S}",
          flush=True)
    r = cnn_demo_reference(out, bits=args.bits, timesteps=T, max_strength=S, seed=args.seed)
    print(f"  float ANN test accuracy      {r['ann_accuracy']:.2%}")
    if "qat_path" in r:
        print(f"  ternary-weight ANN after quantization-aware fine-tuning {r['qat_ann_accuracy']:.2%}"
              f" ({r['qat_path']})")
    _print_table(r["table"], r["ann_accuracy"], T)
    rep = r["report"]
    qat = " (QAT)" if args.bits == 2 and "qat_path" in r else ""
    print(f"  {args.bits}-bit{qat}, T={T}: SNN reference test accuracy {r['snn_accuracy']:.2%} "
          f"({rep['correct']}/{rep['samples']}, "
          f"{100 * (r['snn_accuracy'] - r['ann_accuracy']):+.2f} points)")
    _print_counters(rep)
    return _demo_bundle_and_rtl(args, out, r)


def _demo_bundle_and_rtl(args, out: Path, r: dict) -> int:
    bundle = _write_demo_bundle(out / "bundle", r["graph"], r["meta"], args.rtl_samples)
    print(f"  bundle: {bundle.path} ({_files(bundle.path)})")
    if args.rtl_samples == 0:
        print("  RTL check skipped (--rtl-samples 0)")
        return 0
    exact = _rtl_step(bundle, r["x_int"], min(args.rtl_samples, len(r["x_int"])))
    return 0 if exact else 1


def _check_demo_args(args, out: Path) -> None:
    """Every flag and the output directory, before any training."""
    from .compiler.bundle import check_bundle_target
    from .compiler.convert import check_options

    if args.rtl_samples < 0:
        raise SnncError(f"--rtl-samples must be >= 0, not {args.rtl_samples}")
    if args.seed < 0:
        raise SnncError(f"--seed must be >= 0, not {args.seed}")
    check_options(bits=args.bits, timesteps=1 if args.timesteps is None else args.timesteps,
                  max_strength=1 if args.max_strength is None else args.max_strength)
    if out.exists() and not out.is_dir():
        raise SnncError(f"--out {out} is a file; give the demo a directory")
    check_bundle_target(out / "bundle")


def cmd_demo(args) -> int:
    out = args.out or Path("build/demo-cnn" if args.model == "cnn" else "build/demo")
    _check_demo_args(args, out)
    if args.model == "cnn":
        return _demo_cnn(args, out)
    T = DEFAULT_TIMESTEPS if args.timesteps is None else args.timesteps
    S = DEFAULT_MAX_STRENGTH if args.max_strength is None else args.max_strength
    print(f"snnc demo: 64-64-10 ReLU MLP on scikit-learn digits (seed {args.seed}), "
          f"{args.bits}-bit weights, T={T}, S={S}", flush=True)
    r = demo_reference(out, bits=args.bits, timesteps=T, max_strength=S, seed=args.seed)
    rep = r["report"]
    print(f"  float ANN test accuracy      {r['ann_accuracy']:.2%}")
    print(f"  SNN reference test accuracy {r['snn_accuracy']:.2%} ({rep['correct']}/"
          f"{rep['samples']}, {100 * (r['snn_accuracy'] - r['ann_accuracy']):+.2f} points)")
    _print_counters(rep)
    return _demo_bundle_and_rtl(args, out, r)
