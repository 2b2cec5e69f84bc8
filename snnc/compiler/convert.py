"""Conversion pass: float MLP + calibration -> integer SNN :class:`~snnc.ir.Graph`.

Multi-strength rate coding
--------------------------
Every hidden layer ``l`` (1-based, followed by a ReLU) becomes a spiking population whose neurons
emit spikes of integer strength ``0..S`` per timestep (``S = --max-strength``). One unit of
strength stands for an activation of ``u_l``; the input events (the 8-bit inputs themselves,
every timestep) have ``u_0 = s_in``. Layer ``l``'s weights are quantized as
``W ~= s_w,l * W_q`` (:mod:`snnc.compiler.quantize`), so its integer input current per timestep,
``W_q . s``, is in units of ``c_l = s_w,l * u_(l-1)``. Then::

    theta_l = max(1, round(lambda_l / S / c_l))     # spike unit ~ lambda_l / S
    bias_l  = round(b_l / c_l)
    u_l     = theta_l * c_l                         # the exact activation of one strength unit

``u_l`` is what one unit of spike strength *actually* represents once ``theta_l`` is an integer,
so the next layer's current unit is exact and the rounding of ``theta`` does not compound along
the network (using the nominal ``lambda_l / S`` instead would). A layer saturates at ``S * u_l``,
about its calibrated ``lambda_l``. The last Linear becomes the non-spiking readout integrator
(``theta = 1`` unused, ``s_max = 1``) with ``bias_L = round(b_L / c_L)``; the prediction is the
argmax of its membrane after ``T`` timesteps. ``round`` rounds halves away from zero.

Clamp policy
------------
For population ``k`` let ``(neg, pos) = input_current_bounds(graph, k)`` (the most negative and
most positive synaptic input one timestep can bring to each neuron) and ``b`` its bias. With::

    P = max over neurons j of max(pos_j + max(b_j, 0), -(neg_j + min(b_j, 0)), 1)

a spiking population gets ``v_min = -P`` and ``v_max = max(P, theta)``: the membrane keeps at most
one timestep's worth of input (a neuron that is driven harder than ``S`` spikes per step can carry
over, and a strongly inhibited one can recover within a step or two). The readout gets
``v_min = -T * P`` and ``v_max = T * P`` with ``T`` the compiled timesteps, so it never clamps
within ``T`` timesteps and its final membrane is the exact sum of its inputs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..ir import Dense, Graph, InputPopulation, Population, input_current_bounds, verify
from .errors import SnncError
from .extract import FloatMLP
from .quantize import Calibration, quantize_weights, round_half_away

__all__ = ["STRENGTH_WIDTH", "check_options", "convert", "apply_clamps", "clamp_bound"]

#: Spike strengths travel in a 4-bit field of the core's event word.
STRENGTH_WIDTH = 4


def check_options(*, bits: int, timesteps: int, max_strength: int,
                  percentile: float | None = None) -> None:
    """Validate user options; raise :class:`SnncError` naming the flag and the allowed values."""
    if isinstance(bits, bool) or bits not in (8, 4, 2):
        raise SnncError(f"--bits must be 8, 4 or 2, not {bits}")
    if isinstance(timesteps, bool) or not isinstance(timesteps, (int, np.integer)) or timesteps < 1:
        raise SnncError(f"--timesteps must be an integer >= 1, not {timesteps}")
    limit = (1 << STRENGTH_WIDTH) - 1
    if (isinstance(max_strength, bool) or not isinstance(max_strength, (int, np.integer))
            or not 1 <= max_strength <= limit):
        raise SnncError(f"--max-strength must be an integer in 1..{limit} (the core's spike "
                        f"strength is {STRENGTH_WIDTH} bits wide), not {max_strength}")
    if percentile is not None and not 0 < percentile <= 100:
        raise SnncError(f"--percentile must be in (0, 100], not {percentile}")


def clamp_bound(graph: Graph, index: int) -> int:
    """``P`` of the clamp policy for population ``index`` (see the module docstring)."""
    neg, pos = input_current_bounds(graph, index)
    b = graph.pop(index).bias
    up = pos + np.maximum(b, 0)
    down = -(neg + np.minimum(b, 0))
    return int(max(int(up.max(initial=0)), int(down.max(initial=0)), 1))


def apply_clamps(graph: Graph) -> Graph:
    """Set every population's ``v_min``/``v_max`` by the clamp policy; return a verified graph.

    Precondition: weights, biases, thresholds and ``timesteps`` are final (the bounds depend on
    them, not on the clamps). Postcondition: ``verify(result)`` holds.
    """
    pops = []
    for k, pop in enumerate(graph.populations, start=1):
        p = clamp_bound(graph, k)
        if pop.spiking:
            pops.append(dataclasses.replace(pop, v_min=-p, v_max=max(p, pop.theta)))
        else:
            t = graph.timesteps
            pops.append(dataclasses.replace(pop, v_min=-t * p, v_max=t * p))
    return verify(graph.replace(populations=tuple(pops)))


def convert(net: FloatMLP, calib: Calibration, *, bits: int, timesteps: int, max_strength: int,
            name: str = "snn") -> tuple[Graph, list[dict]]:
    """Quantize ``net`` into a verified integer SNN graph.

    Parameters
    ----------
    net : FloatMLP
        ``Linear (ReLU Linear)*``, from :func:`snnc.compiler.extract.extract_layers`.
    calib : Calibration
        One ``lambda`` per hidden layer and the input scale.
    bits, timesteps, max_strength : int
        Validated by :func:`check_options`.
    name : str
        The graph's name.

    Returns
    -------
    graph : Graph
        Verified, clamps set by :func:`apply_clamps`.
    layers : list of dict
        Per-layer metadata (JSON-ready): name, kind, lambda, unit, weight_scale, theta, s_max,
        nnz, density.
    """
    check_options(bits=bits, timesteps=timesteps, max_strength=max_strength)
    if len(calib.lambdas) != len(net.layers) - 1:
        raise SnncError(f"calibration has {len(calib.lambdas)} activation scales for "
                        f"{len(net.layers) - 1} hidden layers")
    u_prev = calib.input_scale
    pops, projs, meta = [], [], []
    for k, layer in enumerate(net.layers, start=1):
        qw = quantize_weights(layer.weight, bits)
        current_unit = qw.scale * u_prev
        readout = k == len(net.layers)
        if readout:
            lam, theta, s_max = None, 1, 1
        else:
            lam = calib.lambdas[k - 1]
            theta = max(1, int(round_half_away(lam / max_strength / current_unit)))
            s_max = max_strength
            u_prev = theta * current_unit
        bias = round_half_away(layer.bias / current_unit).astype(np.int64)
        pops.append(Population(name=layer.name, size=layer.out_features, bias=bias, theta=theta,
                               s_max=s_max, v_min=0, v_max=theta, spiking=not readout))
        projs.append(Dense(src=k - 1, dst=k, weights=qw.values, bits=bits))
        nnz = int(np.count_nonzero(qw.values))
        meta.append({
            "name": layer.name, "kind": "readout" if readout else "spiking",
            "in_features": layer.in_features, "out_features": layer.out_features,
            "lambda": lam, "unit": None if readout else u_prev, "current_unit": current_unit,
            "weight_scale": qw.scale, "theta": theta, "s_max": s_max, "nnz": nnz,
            "density": nnz / qw.values.size,
            "bias_range": [int(bias.min(initial=0)), int(bias.max(initial=0))],
        })
    graph = Graph(input=InputPopulation("input", tuple(net.input_shape), calib.input_signed),
                  populations=tuple(pops), projections=tuple(projs), timesteps=int(timesteps),
                  name=name)
    return apply_clamps(graph), meta
