"""The compiler pipeline: model file -> verified integer SNN graph + metadata.

The pipeline is the explicit tuple :data:`PASSES`; each pass is a pure function
``Compilation -> Compilation`` that fills in one more field (the work itself lives in the pass
modules: :mod:`~snnc.compiler.load`, :mod:`~snnc.compiler.extract`, :mod:`~snnc.compiler.data`,
:mod:`~snnc.compiler.quantize`, :mod:`~snnc.compiler.convert`, :mod:`~snnc.compiler.report`,
:mod:`~snnc.compiler.budget`).

Order: the calibration set is read before extraction (its sample shape is the last fallback for
the input shape) and checked against the network's input shape after it. The last pass,
:func:`evaluate_pass`, adds warnings (``meta["warnings"]``, a list of strings) and, when labels
are given, the integer SNN's accuracy on the calibration set (``meta["snn_calib_accuracy"]``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..ir import Graph, Readout, required_state_bits
from .budget import check_footprint, core_limits, float_footprint, machine
from .convert import BIAS_CORRECT_NEEDS_DATA, check_options, convert, parse_bits_override
from .data import check_samples, load_npz
from .errors import SnncError
from .extract import extract_layers
from .floatnet import FloatNet
from .load import LoadedModel, load_model
from .equalize import equalize
from .prune import PRUNE_SCOPES, PruneReport, prune
from .quantize import (DATA_FREE, DEFAULT_INPUT_RANGE, Calibration, calibrate,
                       calibrate_from_bounds, calibrate_from_noise)
from .report import accuracy_warnings, data_warnings, snn_accuracy, weight_warnings

__all__ = ["DEFAULT_TIMESTEPS", "DEFAULT_MAX_STRENGTH", "Options", "Compilation", "PASSES",
           "FRONT_PASSES", "compile_model", "compile_variants", "compile_module", "build_meta"]

#: Default timesteps and maximum spike strength, chosen by measurement on the digits MLP (the
#: 4-bit SNN is within 2 points of the float network; see README/examples): at T=4 and S=15 each
#: hidden activation has 60 levels, and the cost (synaptic operations, RTL cycles) grows with T,
#: not with S.
DEFAULT_TIMESTEPS = 4
DEFAULT_MAX_STRENGTH = 15


@dataclass(frozen=True)
class Options:
    """Everything the user chose (see :func:`compile_model`)."""
    path: Path
    bits: int
    timesteps: int
    max_strength: object
    calib: object
    percentile: float = 99.9
    arch: str | None = None
    trust_model: bool = False
    input_shape: tuple[int, ...] | None = None
    readout: str = "membrane"
    evaluate: bool = True
    hardware: bool = False
    input_range: tuple[float, float] | None = None
    prune: float = 0.0
    prune_scope: str = "layer"
    bits_override: tuple = ()
    data_free: str = "noise"
    equalize: bool = False
    bias_correct: bool = False


def readout_mode(text: str) -> Readout:
    """``membrane`` or ``spike-count`` (``spike_count``) as a :class:`Readout`."""
    try:
        return Readout(str(text).replace("-", "_"))
    except ValueError:
        raise SnncError(f"--readout must be 'membrane' or 'spike-count', not {text!r}") from None


@dataclass(frozen=True)
class Compilation:
    """The state threaded through :data:`PASSES`; each pass sets the next field."""
    options: Options
    model: LoadedModel | None = None
    net: FloatNet | None = None
    calib_x: np.ndarray | None = None
    calib_y: np.ndarray | None = None
    calib_source: str | None = None
    calibration: Calibration | None = None
    prune_report: PruneReport | None = None
    graph: Graph | None = None
    layers: tuple[dict, ...] = ()
    snn_accuracy: float | None = None
    warnings: tuple[str, ...] = ()


def check(c: Compilation) -> Compilation:
    """Validate the options before any work is done."""
    o = c.options
    check_options(bits=o.bits, timesteps=o.timesteps, max_strength=o.max_strength,
                  percentile=o.percentile)
    readout_mode(o.readout)
    if o.input_shape is not None and (not o.input_shape or any(d < 1 for d in o.input_shape)):
        raise SnncError(f"--input-shape must be positive sizes, not {list(o.input_shape)}")
    parse_bits_override(o.bits_override)
    if not isinstance(o.prune, (int, float)) or not 0.0 <= o.prune < 1.0:
        raise SnncError(f"--prune must be a fraction in [0, 1), e.g. 0.9 for 90% zeros, not "
                        f"{o.prune!r}")
    if o.prune_scope not in PRUNE_SCOPES:
        raise SnncError(f"--prune-scope must be one of {', '.join(PRUNE_SCOPES)}, not "
                        f"{o.prune_scope!r}")
    if o.data_free not in DATA_FREE:
        raise SnncError(f"--data-free must be one of {', '.join(DATA_FREE)}, not {o.data_free!r}")
    if o.bias_correct and o.calib is None:
        raise SnncError(BIAS_CORRECT_NEEDS_DATA)
    if o.calib is not None and o.input_range is not None:
        raise SnncError("--input-range is for compiling without --calib (model-based "
                        "thresholds); with --calib the data's own range is used: drop one")
    return c


def load(c: Compilation) -> Compilation:
    o = c.options
    return dataclasses.replace(c, model=load_model(o.path, arch=o.arch, trust_model=o.trust_model))


def size_check(c: Compilation) -> Compilation:
    """With ``options.hardware`` (the network is compiled for a generated core): refuse, before
    the calibration and the quantization, a network certainly too large for the generator or this
    machine's memory (a lower bound of its synapse entries at ``options.bits``, see
    :func:`~snnc.compiler.budget.float_footprint`). The exact check runs in
    :func:`~snnc.compiler.bundle.write_bundle`."""
    if c.options.hardware:
        o = c.options
        fewest = min([o.bits] + [b for _, b in parse_bits_override(o.bits_override)])
        check_footprint(float_footprint(c.net, fewest, o.timesteps), limits=core_limits(),
                        memory=machine(".")["memory"])
    return c


def read_calibration(c: Compilation) -> Compilation:
    """Read the calibration set (a path to an .npz, or an ``(x, y)`` pair) as it is stored:
    before extraction, so that its sample shape can serve as the model's input shape."""
    calib = c.options.calib
    if calib is None:
        return c
    if isinstance(calib, (str, Path)):
        x, y = load_npz(calib)
        source = str(calib)
    else:
        x, y = calib
        x = np.asarray(x, dtype=np.float64)
        y = None if y is None else np.asarray(y, dtype=np.int64)
        source = "in-memory"
    return dataclasses.replace(c, calib_x=x, calib_y=y, calib_source=source)


def extract(c: Compilation) -> Compilation:
    """The float network; the input shape comes from the model file, ``--input-shape``, a
    leading Linear, or else the calibration samples (in that order)."""
    data_shape = tuple(c.calib_x.shape[1:]) if c.calib_x is not None and c.calib_x.ndim >= 2 \
        else None
    return dataclasses.replace(c, net=extract_layers(c.model.module, c.options.input_shape,
                                                     data_shape))


def prune_pass(c: Compilation) -> Compilation:
    """With ``--prune F``: magnitude pruning of the float network (:mod:`.prune`), before the
    size check and the calibration, which then see the pruned network."""
    if not c.options.prune:
        return c
    net, report = prune(c.net, c.options.prune, c.options.prune_scope)
    return dataclasses.replace(c, net=net, prune_report=report)


def equalize_pass(c: Compilation) -> Compilation:
    """With ``--equalize``: cross-layer equalization of the float network (:mod:`.equalize`),
    after pruning and before calibration (the function is unchanged; the ranges move)."""
    if not c.options.equalize:
        return c
    return dataclasses.replace(c, net=equalize(c.net))


def check_calibration(c: Compilation) -> Compilation:
    """The calibration samples in the network's input shape (flattened samples are accepted)."""
    if c.calib_x is None:
        return c
    x = check_samples(c.calib_x, c.net.input_shape,
                      what=f"the calibration set ({c.calib_source})")
    return dataclasses.replace(c, calib_x=x,
                               warnings=c.warnings + data_warnings(c.net, x, c.calib_y))


def calibrate_pass(c: Compilation) -> Compilation:
    """Scales from the calibration data, or, without it, from the weights and biases
    (model-based normalization, :func:`~snnc.compiler.quantize.calibrate_from_bounds`)."""
    if c.calib_x is None:
        o = c.options
        lo, hi = o.input_range or DEFAULT_INPUT_RANGE
        if o.data_free == "bounds":
            cal = calibrate_from_bounds(c.net, (lo, hi))
            how = "weight and bias bounds"
            source = f"model-based, inputs in [{lo:g}, {hi:g}]"
        else:
            cal = calibrate_from_noise(c.net, (lo, hi), percentile=o.percentile)
            how = "random inputs"
            source = f"random inputs in [{lo:g}, {hi:g}]"
        note = (f"no --calib: thresholds from {how} in [{lo:g}, {hi:g}] (--data-free "
                f"{o.data_free}; --input-range LO,HI to change); calibrating on data is more "
                "accurate: --calib FILE.npz (float 'x', a few hundred samples, optional labels "
                "'y')")
        cal = dataclasses.replace(cal, notes=(note,) + cal.notes)
        return dataclasses.replace(c, calibration=cal, calib_source=source)
    cal = calibrate(c.net, c.calib_x, c.calib_y, percentile=c.options.percentile)
    return dataclasses.replace(c, calibration=cal)


def convert_pass(c: Compilation) -> Compilation:
    o = c.options
    graph, layers = convert(c.net, c.calibration, bits=o.bits, timesteps=o.timesteps,
                            max_strength=o.max_strength, name=Path(o.path).stem or "snn",
                            readout=readout_mode(o.readout),
                            bits_override=o.bits_override, bias_correct=o.bias_correct)
    return dataclasses.replace(c, graph=graph, layers=tuple(layers))


def evaluate_pass(c: Compilation) -> Compilation:
    """Warn about weight outliers; with labels (and ``Options.evaluate``), run the integer
    reference model on the calibration set and warn if it loses more than
    :data:`~snnc.compiler.report.MAX_LOSS` against the float network."""
    warnings = weight_warnings(c.net, c.graph, c.options.bits)
    acc = None
    if c.options.evaluate and c.calib_y is not None:
        acc = snn_accuracy(c.graph, _input_meta(c), c.calib_x, c.calib_y)
        warnings += accuracy_warnings(acc, c.calibration.ann_accuracy)
    return dataclasses.replace(c, snn_accuracy=acc, warnings=c.warnings + warnings)


def _input_meta(c: Compilation) -> dict:
    """The input quantization part of the metadata (what :func:`quantize_inputs` reads)."""
    t = c.net.input_transform
    return {"input_shape": list(c.net.input_shape), "input_scale": c.calibration.input_scale,
            "input_signed": c.calibration.input_signed,
            "input_transform": None if t is None else t.as_json()}


#: The passes that do not depend on bits, timesteps or strengths.
FRONT_PASSES = (check, load, read_calibration, extract, prune_pass, equalize_pass, size_check,
                check_calibration, calibrate_pass)
#: The passes, in order.
PASSES = FRONT_PASSES + (convert_pass, evaluate_pass)


def build_meta(c: Compilation) -> dict:
    """The JSON-ready metadata of a finished compilation (stored in the bundle)."""
    o, cal = c.options, c.calibration
    return {
        "snnc_version": __version__,
        "source": str(o.path),
        "format": c.model.format,
        "bits": o.bits,
        "bits_override": dict(parse_bits_override(o.bits_override)),
        "timesteps": o.timesteps,
        "max_strength": check_options(bits=o.bits, timesteps=o.timesteps,
                                      max_strength=o.max_strength).as_json(),
        "percentile": o.percentile,
        "readout": c.graph.readout.value,
        **_input_meta(c),
        "layers": [dict(layer) for layer in c.layers],
        "state_bits": required_state_bits(c.graph),
        "calibration": {"source": c.calib_source, "samples": cal.samples,
                        "ann_accuracy": cal.ann_accuracy},
        "pruning": None if c.prune_report is None else c.prune_report.as_json(),
        "equalized": bool(o.equalize),
        "bias_corrected": bool(o.bias_correct),
        "ann_calib_accuracy": cal.ann_accuracy,
        "snn_calib_accuracy": c.snn_accuracy,
        "dropped_ops": list(c.net.dropped),
        "notes": list(cal.notes),
        "warnings": list(c.net.warnings) + list(c.warnings),
    }


def compile_model(path, *, bits: int, timesteps: int, max_strength, calib=None,
                  percentile: float = 99.9, arch: str | None = None, trust_model: bool = False,
                  input_shape=None, readout: str = "membrane",
                  evaluate: bool = True, hardware: bool = False,
                  input_range=None, prune: float = 0.0,
                  prune_scope: str = "layer", bits_override=None,
                  data_free: str = "noise", equalize: bool = False,
                  bias_correct: bool = False) -> tuple[Graph, dict]:
    """Compile a model file into a verified SNN graph and its metadata.

    Parameters
    ----------
    path : str or Path
        ``.pt2`` ExportedProgram, state_dict (with ``arch``), or pickled module (with
        ``trust_model``).
    bits : {8, 4, 2}
    bits_override : str or sequence of (layer, bits), optional
        Mixed precision: other widths for some layers, e.g. ``"conv1=8,fc=8"``.
    timesteps : int >= 1
    max_strength : int in 1..15, or str
        For every spiking layer, or per layer: ``"7,conv1=3,fc1=15"``
        (:func:`~snnc.compiler.convert.parse_max_strength`).
    calib : str, Path or (x, y), optional
        Calibration data: an ``.npz`` path or arrays (``y`` may be None). Without it the
        scales come from the weights and biases for inputs in ``input_range``.
    percentile : float in (0, 100]
    arch : str, optional
        ``module:Class`` for state_dict files.
    trust_model : bool
    input_shape : tuple of int, optional
    readout : {"membrane", "spike-count"}
        Argmax of the non-spiking readout's membrane, or of a spiking readout's spike strength.
    evaluate : bool
        With labels in ``calib``, run the integer SNN on the calibration set
        (``meta["snn_calib_accuracy"]``, and a warning if it loses more than 3 points).
    hardware : bool
        The graph is meant for a generated core (``write_bundle(..., hardware=True)``): refuse a
        network certainly too large for it before quantizing (:func:`size_check`).
    input_range : (float, float), optional
        Without ``calib``: the range of every raw input (default ``(0, 1)``).
    equalize : bool
        Cross-layer equalization before calibration (:mod:`.equalize`).
    bias_correct : bool
        Bias correction with the calibration data (:func:`~.convert.convert`).
    data_free : {"noise", "bounds"}
        Without ``calib``: scales from random inputs in the range (default) or from weight and
        bias bounds (:mod:`.quantize`).
    prune : float in [0, 1)
        Magnitude pruning: the fraction of each layer's weights (``prune_scope="layer"``) or of
        all weights (``"global"``) that is zero before quantization (:mod:`.prune`).

    Returns
    -------
    (Graph, dict)

    Raises
    ------
    SnncError
    """
    ((graph, meta),) = compile_variants(
        path, [{"bits": bits, "timesteps": timesteps, "max_strength": max_strength,
                "readout": readout, "bits_override": parse_bits_override(bits_override)}],
        calib=calib, percentile=percentile, arch=arch, trust_model=trust_model,
        input_shape=input_shape, evaluate=evaluate, hardware=hardware, input_range=input_range,
        prune=prune, prune_scope=prune_scope, data_free=data_free, equalize=equalize,
        bias_correct=bias_correct)
    return graph, meta


def compile_variants(path, variants, *, calib=None, percentile: float = 99.9,
                     arch: str | None = None, trust_model: bool = False, input_shape=None,
                     evaluate: bool = True, hardware: bool = False,
                     input_range=None, prune: float = 0.0,
                     prune_scope: str = "layer", data_free: str = "noise",
                     equalize: bool = False,
                     bias_correct: bool = False) -> list[tuple[Graph, dict]]:
    """Compile one model at several settings, loading, extracting and calibrating it once.

    ``variants`` is a sequence of dicts with ``bits``, ``timesteps``, ``max_strength`` and
    optionally ``readout``; the
    other parameters are those of :func:`compile_model`. Returns one ``(graph, meta)`` per
    variant, each equal to what :func:`compile_model` gives for it. With ``hardware`` the size
    check uses the smallest ``bits`` of the variants (the fewest synapses).
    """
    return _compile(Path(path), None, variants, calib=calib, percentile=percentile, arch=arch,
                    trust_model=trust_model, input_shape=input_shape, evaluate=evaluate,
                    hardware=hardware, input_range=input_range, prune=prune,
                    prune_scope=prune_scope, data_free=data_free, equalize=equalize,
                    bias_correct=bias_correct)


def compile_module(module, variants, *, calib, percentile: float = 99.9,
                   input_shape=None, evaluate: bool = False) -> list[tuple[Graph, dict]]:
    """:func:`compile_variants` for a network in memory (an ``nn.Module`` or fx
    ``GraphModule``) instead of a model file: every pass after loading is the same.

    Used in training loops (:mod:`snnc.models.qat`) to compile the current weights; the SNN's
    accuracy on the calibration set is only measured with ``evaluate=True``.
    """
    return _compile(Path("in-memory"), module, variants, calib=calib, percentile=percentile,
                    input_shape=input_shape, evaluate=evaluate)


def _compile(path: Path, module, variants, *, calib, percentile, arch=None, trust_model=False,
             input_shape=None, evaluate=True, hardware=False,
             input_range=None, prune=0.0, prune_scope="layer",
             data_free="noise", equalize=False,
             bias_correct=False) -> list[tuple[Graph, dict]]:
    shape = None if input_shape is None else tuple(int(d) for d in input_shape)
    variants = [dict(v) for v in variants]
    if not variants:
        raise SnncError("nothing to compile: no settings given")
    base = Compilation(Options(path, calib=calib, percentile=percentile, arch=arch,
                               trust_model=trust_model, input_shape=shape, evaluate=evaluate,
                               hardware=hardware,
                               input_range=None if input_range is None else
                               tuple(float(v) for v in input_range),
                               prune=prune, prune_scope=prune_scope, data_free=data_free,
                               equalize=bool(equalize), bias_correct=bool(bias_correct),
                               **variants[0]))
    for v in variants[1:]:
        check(dataclasses.replace(base, options=dataclasses.replace(base.options, **v)))
    if hardware and len(variants) > 1:      # the size check at the fewest synapses
        check(base)
        fewest = min((v["bits"] for v in variants), key=int)
        base = dataclasses.replace(base, options=dataclasses.replace(base.options, bits=fewest))
    c, passes = base, FRONT_PASSES
    if module is not None:                  # in memory: the model is already "loaded"
        c = dataclasses.replace(check(c), model=LoadedModel(module, "in-memory", path))
        passes = tuple(p for p in FRONT_PASSES if p not in (check, load))
    for compiler_pass in passes:
        c = compiler_pass(c)
    out = []
    for v in variants:
        cv = dataclasses.replace(c, options=dataclasses.replace(c.options, **v))
        cv = evaluate_pass(convert_pass(cv))
        out.append((cv.graph, build_meta(cv)))
    return out
