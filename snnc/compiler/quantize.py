"""Quantization passes: calibrated activation scales, input scale, and low-bit weights.

Activation scales (Rueckauer et al. 2017, "Conversion of continuous-valued deep networks to
efficient event-driven networks for image classification"): the float network runs on the
calibration inputs and each hidden layer's scale ``lambda_l`` is the ``percentile`` (default 99.9)
of all of that layer's post-ReLU activations, over every sample and neuron. Using a high
percentile instead of the maximum keeps rare outliers from coarsening the resolution.

Input scale (of the inputs after the model's constant input transform ``x' = (x - offset) *
gain``, if it has one; :mod:`snnc.compiler.inputxform`): inputs are unsigned when every
calibration value is >= 0, else signed. With
``m = max |x|`` over the calibration set, ``s_in = m / 255`` (unsigned, events in ``[0, 255]``) or
``m / 127`` (signed, events in ``[-127, 127]``); see :func:`snnc.compiler.data.quantize_inputs`.

Without calibration data (model-based normalization, Diehl et al. 2015, Rueckauer et al.
2017): :func:`calibrate_from_bounds` bounds every activation from the weights and biases alone,
for raw inputs in a given range (default ``[0, 1]``), by interval arithmetic: a linear term maps
bounds ``[lo, hi]`` to ``[W+ lo + W- hi, W+ hi + W- lo]`` (``W+``, ``W-`` the positive and
negative parts), ReLU and caps clip them, and pools pool them. ``lambda_l`` is the largest upper
bound of layer ``l``; the input scale comes from the bounds of the transformed input. These
scales are never exceeded, so no neuron saturates, but they are loose: spikes are rarer and
accuracy at few timesteps is lower than with data.

The default without data (:func:`calibrate_from_noise`) is tighter: the scales are the
``percentile`` of the activations on :data:`NOISE_SAMPLES` random inputs drawn uniformly from the
input range (seed 0), and the input scale is that of the range, as above. On the digits CNN
it is as accurate as data, where the bounds leave the deep layers nearly silent (README).

Weights: symmetric per-layer quantization to ``b`` bits, integers in ``[-q, q]`` with
``q = 2**(b-1) - 1`` (so 2 bits is ternary {-1, 0, 1}). The scale ``s_w`` minimizes the mean squared
error ``mean((s_w * W_q - W)**2)`` over the candidates ``s_w = max|W| * f / q`` for ``f`` in
:data:`SCALE_FACTORS` (1.0 down to 0.3): clipping the few largest weights buys resolution for the
many small ones, which matters at 4 and 2 bits. Weights that round to zero are absent synapses.

A layer with several inputs (a residual addition) has one integer current for all of them, so
its inputs share one current unit ``c``: :func:`quantize_terms` quantizes the *effective* weights
``A_j = W_j * u_j`` (float weight times the source's unit of spike strength) as
``A_j ~= c * clip(round(A_j / c), -q, q)``, with ``c`` chosen by the same MSE search over all
``A_j`` together. An identity shortcut's weight is at least 1, so the shortcut never vanishes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..ir import WEIGHT_BITS, weight_limit
from .errors import SnncError
from .floatnet import FloatNet

__all__ = ["SCALE_FACTORS", "round_half_away", "QuantizedWeights", "quantize_weights",
           "quantize_terms", "input_scale", "Calibration", "calibrate", "calibrate_from_bounds",
           "activation_bounds", "DEFAULT_INPUT_RANGE", "calibrate_from_noise", "DATA_FREE",
           "NOISE_SAMPLES"]

#: The ways to pick the scales without calibration data, the default first.
DATA_FREE = ("noise", "bounds")
#: Random inputs :func:`calibrate_from_noise` draws (seed 0).
NOISE_SAMPLES = 1024

#: The raw input range model-based calibration assumes unless told otherwise (images as
#: ``torchvision.transforms.ToTensor`` gives them).
DEFAULT_INPUT_RANGE = (0.0, 1.0)

#: Candidate clipping factors for the weight scale search, largest first (ties keep the largest).
SCALE_FACTORS = tuple(round(1.0 - 0.01 * i, 2) for i in range(71))


@dataclass(frozen=True)
class QuantizedWeights:
    """Integer weights ``values`` (int64) with ``float_weights ~= scale * values``."""
    values: np.ndarray
    scale: float
    bits: int
    mse: float


def round_half_away(x) -> np.ndarray:
    """Round half away from zero (numpy's rint rounds half to even)."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize_weights(weight, bits: int, factors=SCALE_FACTORS) -> QuantizedWeights:
    """Quantize a float weight matrix to ``bits``-bit symmetric integers, MSE-optimal scale.

    Parameters
    ----------
    weight : array of float
    bits : int
        One of :data:`snnc.ir.WEIGHT_BITS`.
    factors : sequence of float
        Clipping factors tried, in order; the first with the lowest MSE wins.

    Returns
    -------
    QuantizedWeights
    """
    if bits not in WEIGHT_BITS:
        raise SnncError(f"--bits must be one of {', '.join(map(str, WEIGHT_BITS))}, not {bits}")
    w = np.asarray(weight, dtype=np.float64)
    q = weight_limit(bits)
    wmax = float(np.abs(w).max(initial=0.0))
    if wmax == 0.0:
        return QuantizedWeights(np.zeros(w.shape, dtype=np.int64), 1.0, bits, 0.0)
    best = None
    for f in factors:
        scale = wmax * f / q
        values = np.clip(round_half_away(w / scale), -q, q)
        mse = float(np.mean((values * scale - w) ** 2))
        if best is None or mse < best.mse:
            best = QuantizedWeights(values.astype(np.int64), scale, bits, mse)
    return best


def quantize_terms(effective, bits: int, identity=None, factors=SCALE_FACTORS):
    """Quantize several effective weight arrays with one shared current unit ``c``.

    Parameters
    ----------
    effective : list of float arrays
        ``A_j = W_j * u_j`` for each input ``j`` of one layer.
    bits : int
    identity : list of bool, optional
        Inputs that are identity shortcuts: their nonzero weights quantize to at least 1 in
        magnitude.
    factors : sequence of float

    Returns
    -------
    (list of int64 arrays, c, mse)
        ``A_j ~= c * values_j``; ``mse`` over all weights of all inputs.
    """
    if bits not in WEIGHT_BITS:
        raise SnncError(f"--bits must be one of {', '.join(map(str, WEIGHT_BITS))}, not {bits}")
    q = weight_limit(bits)
    arrays = [np.asarray(a, dtype=np.float64) for a in effective]
    identity = identity or [False] * len(arrays)
    amax = max(float(np.abs(a).max(initial=0.0)) for a in arrays)
    if amax == 0.0:
        return [np.zeros(a.shape, dtype=np.int64) for a in arrays], 1.0, 0.0
    n = sum(a.size for a in arrays)
    best = None
    for f in factors:
        c = amax * f / q
        values = []
        for a, ident in zip(arrays, identity):
            v = np.clip(round_half_away(a / c), -q, q)
            if ident:
                v = np.where((v == 0) & (a != 0), np.sign(a), v)
            values.append(v)
        mse = sum(float(np.sum((v * c - a) ** 2)) for v, a in zip(values, arrays)) / n
        if best is None or mse < best[2]:
            best = ([v.astype(np.int64) for v in values], c, mse)
    return best


def input_scale(x) -> tuple[float, bool]:
    """``(s_in, signed)`` for calibration inputs ``x`` (see the module docstring)."""
    x = np.asarray(x, dtype=np.float64)
    signed = bool((x < 0).any())
    m = float(np.abs(x).max(initial=0.0))
    if m == 0.0:
        raise SnncError("the calibration inputs are all zero; give representative inputs")
    return m / (127 if signed else 255), signed


@dataclass(frozen=True)
class Calibration:
    """What calibration learned about the float network.

    Attributes
    ----------
    lambdas : tuple of float
        Activation scale of each spiking (ReLU) layer, in the order of ``FloatNet.spiking``.
    input_scale : float
    input_signed : bool
    samples : int
    ann_accuracy : float or None
        Float accuracy on the calibration set when labels were given.
    readout_lambda : float
        The ``percentile`` of the readout's positive outputs (logits), used when the readout
        spikes (spike-count readout).
    means : dict or None
        Per node (and ``"input"``, after the input transform): the mean of each output value
        over the calibration samples (flattened), for bias correction; None without data.
    notes : tuple of str
        Fallbacks taken (a layer whose percentile was 0).
    """
    lambdas: tuple[float, ...]
    input_scale: float
    input_signed: bool
    samples: int
    ann_accuracy: float | None = None
    notes: tuple[str, ...] = ()
    readout_lambda: float = 1.0
    means: dict | None = None


def calibrate(net: FloatNet, x, y=None, *, percentile: float = 99.9,
              batch_size: int = 512) -> Calibration:
    """Run the float network on calibration inputs and pick the activation scales.

    Parameters
    ----------
    net : FloatNet
    x : float array, shape (N, ...)
        Calibration inputs, the model's per-sample shape (or flattened).
    y : int array (N,), optional
        Labels, only used to report the float accuracy.
    percentile : float in (0, 100]
    batch_size : int
        Samples per forward pass (bounds the memory the activations take).

    Returns
    -------
    Calibration
        ``lambdas[l]`` is the ``percentile`` of spiking layer ``l``'s post-ReLU activations (over
        every sample, channel and position); if that is 0 (a mostly silent layer) the maximum is
        used, and 1.0 if the layer never activates; a ReLU6 layer's is at most 6.
    """
    if not 0 < percentile <= 100:
        raise SnncError(f"--percentile must be in (0, 100], not {percentile}")
    x = np.asarray(x, dtype=np.float64)
    names = [layer.name for layer in net.spiking] + [net.readout.name]
    parts = {name: [] for name in names}
    sums: dict[str, np.ndarray] = {}
    for start in range(0, len(x), batch_size):
        acts = net.activations(x[start:start + batch_size])
        for name in names:
            parts[name].append(acts[name])
        for name, a in acts.items():
            sums[name] = sums.get(name, 0.0) + a.sum(axis=0)
    outs = {name: np.concatenate(v) for name, v in parts.items()}
    means = {name: v / len(x) for name, v in sums.items()}
    lambdas, notes = [], []
    for layer in net.spiking:
        act = outs[layer.name]
        lam = float(np.percentile(act, percentile))
        if lam <= 0.0:
            lam = float(act.max(initial=0.0))
            if lam <= 0.0:
                lam = 1.0
                notes.append(f"layer '{layer.name}' never activates on the calibration data")
            else:
                notes.append(f"layer '{layer.name}': the {percentile} percentile is 0, using the "
                             "maximum activation")
        if layer.cap is not None:  # ReLU6: the activation never exceeds the cap
            lam = min(lam, layer.cap)
        lambdas.append(lam)
    s_in, signed = input_scale(net.transform_input(x))
    acc = None
    if y is not None:
        acc = float(np.mean(np.argmax(outs[net.readout.name], axis=1) == np.asarray(y)))
    logits = outs[net.readout.name]
    positive = logits[logits > 0]
    readout_lambda = float(np.percentile(positive, percentile)) if positive.size else 1.0
    return Calibration(tuple(lambdas), s_in, signed, int(len(x)), acc, tuple(notes),
                       readout_lambda=readout_lambda or 1.0, means=means)


def _input_bounds(net: FloatNet, input_range) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of the transformed input ``x'`` when every raw input lies in ``input_range``."""
    lo_raw, hi_raw = (float(v) for v in input_range)
    if not lo_raw < hi_raw:
        raise SnncError(f"--input-range must be LO,HI with LO < HI, not {lo_raw},{hi_raw}")
    n = int(np.prod(net.input_shape))
    a = net.transform_input(np.full((1, n), lo_raw)).reshape(-1)
    b = net.transform_input(np.full((1, n), hi_raw)).reshape(-1)
    return np.minimum(a, b), np.maximum(a, b)


def _range_input_scale(lo: np.ndarray, hi: np.ndarray) -> tuple[float, bool]:
    """``(s_in, signed)`` for transformed inputs within ``[lo, hi]``."""
    signed = bool((lo < 0).any())
    m = float(max(np.abs(lo).max(initial=0.0), np.abs(hi).max(initial=0.0)))
    if m == 0.0:
        raise SnncError("the input range maps every input to 0; give --input-range")
    return m / (127 if signed else 255), signed


def activation_bounds(net: FloatNet, input_range=DEFAULT_INPUT_RANGE) -> dict:
    """``name -> (lo, hi)`` (float64 arrays, flattened) for the input (``"input"``, after the
    input transform) and every node, when each raw input lies in ``input_range``: interval
    arithmetic through every term, ReLU, cap and pool (module docstring)."""
    import torch
    import torch.nn.functional as F
    from .floatnet import INPUT, Pool
    bounds = {INPUT: _input_bounds(net, input_range)}
    for node in net.nodes:
        if isinstance(node, Pool):
            lo, hi = (torch.from_numpy(v).reshape(1, *net.shape(node.src))
                      for v in bounds[node.src])
            pool = F.max_pool2d if node.kind == "max" else F.avg_pool2d
            bounds[node.name] = tuple(pool(v, node.kernel, node.kernel).reshape(-1).numpy()
                                      for v in (lo, hi))
            continue
        lo = node.bias.astype(np.float64).copy()
        hi = lo.copy()
        for term in node.terms:
            s_lo, s_hi = (torch.from_numpy(v).reshape(1, -1) for v in bounds[term.src])
            shape = net.shape(term.src)
            pos = dataclasses.replace(term, weight=np.maximum(term.weight, 0.0))
            neg = dataclasses.replace(term, weight=np.minimum(term.weight, 0.0))
            with torch.no_grad():
                hi += (pos.apply(s_hi, shape) + neg.apply(s_lo, shape)).reshape(-1).numpy()
                lo += (pos.apply(s_lo, shape) + neg.apply(s_hi, shape)).reshape(-1).numpy()
        if node.relu:
            lo, hi = np.maximum(lo, 0.0), np.maximum(hi, 0.0)
            if node.cap is not None:
                lo, hi = np.minimum(lo, node.cap), np.minimum(hi, node.cap)
        bounds[node.name] = (lo, hi)
    return bounds


def calibrate_from_bounds(net: FloatNet, input_range=DEFAULT_INPUT_RANGE) -> Calibration:
    """Model-based normalization (no data): each spiking layer's scale is the largest upper
    bound of its activations (:func:`activation_bounds`), the input scale that of the
    transformed input's bounds, the readout's that of its positive outputs."""
    from .floatnet import INPUT
    bounds = activation_bounds(net, input_range)
    lambdas, notes = [], []
    for layer in net.spiking:
        lam = float(bounds[layer.name][1].max(initial=0.0))
        if lam <= 0.0:
            lam = 1.0
            notes.append(f"layer '{layer.name}' can never activate for inputs in "
                         f"[{input_range[0]}, {input_range[1]}]")
        lambdas.append(lam)
    s_in, signed = _range_input_scale(*bounds[INPUT])
    readout_hi = float(bounds[net.readout.name][1].max(initial=0.0))
    return Calibration(tuple(lambdas), s_in, signed, 0, None,
                       tuple(notes), readout_lambda=readout_hi if readout_hi > 0 else 1.0)


def calibrate_from_noise(net: FloatNet, input_range=DEFAULT_INPUT_RANGE, *,
                         percentile: float = 99.9, samples: int = NOISE_SAMPLES) -> Calibration:
    """Scales without data: :func:`calibrate` on ``samples`` inputs drawn uniformly from
    ``input_range`` (seed 0), with the input scale of the range itself
    (:func:`calibrate_from_bounds`), so that no input in the range clips."""
    s_in, signed = _range_input_scale(*_input_bounds(net, input_range))
    lo, hi = (float(v) for v in input_range)
    x = np.random.default_rng(0).uniform(lo, hi, (samples, *net.input_shape))
    cal = calibrate(net, x, None, percentile=percentile)
    return dataclasses.replace(cal, input_scale=s_in, input_signed=signed, samples=0,
                               means=None)
