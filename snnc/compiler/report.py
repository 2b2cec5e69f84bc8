"""Checks that turn silent surprises into warnings in the compile report (``meta["warnings"]``).

Each function is pure and returns a tuple of warning strings (empty when all is well):

- :func:`data_warnings`: calibration inputs that look like raw integers (every value an integer,
  maximum above 1, e.g. 0..255 pixels) when the model has no input transform of its own: the
  network is then compiled for that scale, and data at simulate time must use it too; labels
  ``y`` out of range of the readout's classes.
- :func:`weight_warnings`: a layer where weight quantization zeroed more than half of the nonzero
  float weights *and* the largest ``|w|`` is at least :data:`OUTLIER_RATIO` times the 99th
  percentile ``|w|`` (an outlier sets the weight scale; without the outlier condition ternary
  weights, where half the synapses at 0 is normal, would warn on healthy layers).
- :func:`snn_accuracy`: the integer reference model's accuracy on the calibration set (batches of
  :data:`BATCH`), and :func:`accuracy_warnings`: a loss of more than :data:`MAX_LOSS` against the
  float network.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph
from .data import quantize_inputs
from .floatnet import FloatNet, Layer

__all__ = ["MAX_LOSS", "OUTLIER_RATIO", "BATCH", "data_warnings", "weight_warnings",
           "snn_accuracy", "accuracy_warnings"]

#: Accuracy loss (fraction) of the SNN against the float network that warrants a warning.
MAX_LOSS = 0.03
#: ``max |w| / percentile(|w|, 99)`` above which a mostly zeroed layer is blamed on an outlier.
OUTLIER_RATIO = 2.0
#: Samples per reference-model batch.
BATCH = 256


def data_warnings(net: FloatNet, x, y) -> tuple[str, ...]:
    """Warnings about the calibration data ``x`` (as given) and labels ``y`` (or None)."""
    out = []
    x = np.asarray(x)
    top = float(np.max(x)) if x.size else 0.0
    if net.input_transform is None and top > 1 and np.array_equal(x, np.round(x)):
        out.append(f"the calibration inputs are all integers, up to {top:g} (raw pixel values?): "
                   "the network is compiled for inputs on this scale, so the data given to snnc "
                   "simulate / verify and to the hardware must use the same scale; if the model "
                   "was trained on scaled inputs (e.g. x / 255), scale the calibration data the "
                   "same way")
    classes = net.readout.size
    if y is not None and len(y) and int(np.max(y)) >= classes:
        out.append(f"the calibration labels go up to {int(np.max(y))}, but the readout has "
                   f"{classes} classes (labels 0..{classes - 1}): check the labels or the model's "
                   "last layer")
    return tuple(out)


def weight_warnings(net: FloatNet, graph: Graph, bits: int | None = None) -> tuple[str, ...]:
    """Layers whose weights mostly quantized to zero because of an outlier (each layer at its
    own width; ``bits`` is unused and kept for callers)."""
    out = []
    index = {p.name: k for k, p in enumerate(graph.populations, start=1)}
    for node in net.nodes:
        if not isinstance(node, Layer) or node.name not in index:
            continue
        w = np.concatenate([np.abs(t.weight).ravel() for t in node.terms if not t.identity]
                           or [np.zeros(0)])
        w = w[w != 0]
        total = sum(int(np.count_nonzero(t.weight)) for t in node.terms)
        if not w.size or not total:
            continue
        kept = sum(p.nnz for p in graph.incoming(index[node.name]))
        bits = graph.incoming(index[node.name])[0].bits
        zeroed = 1 - kept / total
        big, p99 = float(w.max()), float(np.percentile(w, 99))
        if zeroed > 0.5 and big >= OUTLIER_RATIO * p99:
            out.append(f"layer '{node.name}': {zeroed:.0%} of its nonzero weights quantize to 0 "
                       f"at {bits} bits: its largest |w| is {big:.3g}, the 99th percentile |w| "
                       f"only {p99:.3g}, so an outlier sets the weight scale; check the weights "
                       "(clip the outliers, or retrain with weight decay), use more --bits, or "
                       "fine-tune with quantization-aware training (snnc.models.qat.finetune)")
    return tuple(out)


def snn_accuracy(graph: Graph, meta: dict, x, y) -> float:
    """The integer reference model's accuracy on ``x`` (float, quantized with ``meta``)."""
    from ..sim.reference import run

    x_int = quantize_inputs(x, meta)
    correct = 0
    for start in range(0, len(x_int), BATCH):
        pred = run(graph, x_int[start:start + BATCH], timesteps=graph.timesteps).prediction
        correct += int(np.sum(pred == np.asarray(y[start:start + BATCH])))
    return correct / len(x_int)


def accuracy_warnings(snn: float | None, ann: float | None) -> tuple[str, ...]:
    """A warning when the SNN loses more than :data:`MAX_LOSS` against the float network."""
    if snn is None or ann is None or ann - snn <= MAX_LOSS:
        return ()
    return (f"the SNN's accuracy on the calibration set is {snn:.1%}, {100 * (ann - snn):.1f} "
            f"points below the float network's {ann:.1%}: fine-tune with quantization-aware "
            "training (snnc.models.qat.finetune, the Python API; see README) or compile with "
            "more --bits or --timesteps",)
