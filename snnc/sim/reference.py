"""Vectorized integer reference model: the definition of snnc's numeric contract.

It runs a :class:`snnc.ir.Graph` on a batch of integer inputs with the exact semantics written in
``docs/architecture.md``. The cycle-accurate simulator and the RTL must reproduce its spikes,
membranes and counters bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Conv, Graph, MaxPool, Readout

__all__ = ["RunResult", "neuron_step", "run", "check_inputs", "argmax_lowest", "maxpool_gate",
           "conv_exact"]

# float64 matrix products are exact while every partial sum stays below 2**53.
_EXACT_F64 = 1 << 53


@dataclass
class RunResult:
    """Everything one reference run produces, for a batch of ``B`` inputs.

    Attributes
    ----------
    spikes : list of int64 arrays, one per neuron population, shaped (T, B, n)
        Spike strength of every neuron at every timestep (all zero for the readout integrator).
    v_final : list of int64 arrays shaped (B, n)
        Membranes after the last timestep; for a max-pool population, the gate state
        ``best_acc * 64 + best_idx`` (the winning member's accumulated strength and its index).
    prediction : int64 array (B,)
    synops : int64 array (B,)
        Synaptic operations: one nonzero weight reached by one nonzero event.
    input_events : int64 array (B,)
        Nonzero input values, summed over timesteps.
    spike_counts : int64 array (B, n_populations)
        Number of (neuron, timestep) pairs with a nonzero spike, per population.
    spike_strength : int64 array (B, n_populations)
        Sum of spike strengths, per population.
    """
    spikes: list
    v_final: list
    prediction: np.ndarray
    synops: np.ndarray
    input_events: np.ndarray
    spike_counts: np.ndarray
    spike_strength: np.ndarray

    def counters(self, b: int) -> dict:
        """Counters of sample ``b`` as plain ints (JSON-ready)."""
        return {
            "synops": int(self.synops[b]),
            "input_events": int(self.input_events[b]),
            "spike_counts": [int(v) for v in self.spike_counts[b]],
            "spike_strength": [int(v) for v in self.spike_strength[b]],
        }


def neuron_step(u, theta: int, s_max: int, v_min: int, v_max: int, spiking: bool):
    """The per-timestep phase-domain neuron update on ``U = V + input + bias``.

    Returns ``(s, V_next)`` with ``s = min(U // theta, s_max)`` when ``U >= theta`` (else 0) and
    ``V_next = clamp(U - s * theta, v_min, v_max)``; a non-spiking neuron has ``s = 0``.
    """
    u = np.asarray(u, dtype=np.int64)
    if spiking:
        s = np.where(u >= theta, np.minimum(u // theta, s_max), 0)
    else:
        s = np.zeros_like(u)
    return s, np.clip(u - s * theta, v_min, v_max)


def argmax_lowest(values: np.ndarray) -> np.ndarray:
    """Row-wise argmax, ties going to the lowest index (numpy's argmax already does this)."""
    return np.argmax(values, axis=-1).astype(np.int64)


def check_inputs(graph: Graph, x) -> np.ndarray:
    """Validate integer inputs for ``graph``; return them as int64 shaped (B, n_in)."""
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"reference inputs must be integers (quantized), not {x.dtype}")
    x = x.astype(np.int64).reshape(x.shape[0], -1) if x.ndim > 1 else x.astype(np.int64)[None, :]
    if x.shape[1] != graph.input.size:
        raise ValueError(f"inputs have {x.shape[1]} values per sample, the network expects "
                         f"{graph.input.size}")
    lo, hi = graph.input.value_range
    if x.size and (x.min() < lo or x.max() > hi):
        raise ValueError(f"input values must lie in [{lo}, {hi}], got [{x.min()}, {x.max()}]")
    return x


def conv_exact(src: np.ndarray, proj: Conv, in_shape) -> np.ndarray:
    """Integer 2-D convolution of a batch of flattened sources (exact: float64 below 2**53)."""
    import torch
    x = torch.from_numpy(src.reshape((src.shape[0],) + tuple(in_shape)).astype(np.float64))
    w = torch.from_numpy(proj.weights.astype(np.float64))
    out = torch.nn.functional.conv2d(x, w, stride=proj.stride, padding=proj.padding)
    return np.rint(out.numpy()).astype(np.int64).reshape(src.shape[0], -1)


def maxpool_gate(acc: np.ndarray, s: np.ndarray, in_shape, k: int) -> np.ndarray:
    """Spiking max-pool output for one timestep.

    ``acc`` (B, n_src) is each member's accumulated strength including this timestep, ``s`` its
    strength this timestep. Each ``k x k`` window passes the strength of its member with the
    highest ``acc``, ties going to the first member in row-major window order.
    """
    B = acc.shape[0]
    c, h, w = in_shape
    ho, wo = h // k, w // k

    def windows(a):
        a = a.reshape(B, c, h, w)[:, :, :ho * k, :wo * k].reshape(B, c, ho, k, wo, k)
        return a.transpose(0, 1, 2, 4, 3, 5).reshape(B, c, ho, wo, k * k)
    win = np.argmax(windows(acc), axis=-1)
    return np.take_along_axis(windows(s), win[..., None], axis=-1).reshape(B, -1)


def _matmul_exact(src: np.ndarray, weights_t: np.ndarray, bound: int) -> np.ndarray:
    if bound < _EXACT_F64:
        return np.rint(src.astype(np.float64) @ weights_t.astype(np.float64)).astype(np.int64)
    return src @ weights_t


def run(graph: Graph, x, timesteps: int | None = None) -> RunResult:
    """Run ``graph`` on integer inputs ``x`` (shape (B, ...) ) for ``timesteps`` steps."""
    x = check_inputs(graph, x)
    T = graph.timesteps if timesteps is None else int(timesteps)
    if T < 1:
        raise ValueError(f"timesteps must be >= 1, not {T}")
    B = x.shape[0]
    pops = graph.populations
    K = graph.n_pops
    V = [np.zeros((B, p.size), dtype=np.int64) for p in pops]
    spikes = [np.zeros((T, B, p.size), dtype=np.int64) for p in pops]
    synops = np.zeros(B, dtype=np.int64)
    # Per projection: how to apply it, and how many synapses each nonzero event reaches.
    plan = []
    for proj in graph.projections:
        if isinstance(proj, MaxPool):
            continue
        lo, hi = (graph.input.value_range if proj.src == 0 else (0, graph.pop(proj.src).s_max))
        if isinstance(proj, Conv):
            plan.append((proj, None, None, 0))
        else:
            wt = np.ascontiguousarray(proj.weights.T)
            fan = np.count_nonzero(proj.weights, axis=0).astype(np.int64)
            bound = int(np.abs(proj.weights).sum(axis=1).max(initial=0)) * max(abs(lo), abs(hi))
            plan.append((proj, wt, fan, bound))
    pool_acc = {k: np.zeros((B, graph.size(p.src)), dtype=np.int64)
                for k in range(1, K) for p in graph.incoming(k) if isinstance(p, MaxPool)}
    x_nonzero = (x != 0).astype(np.int64)
    for t in range(T):
        out = {0: x}
        for k in range(1, K):
            pop = pops[k - 1]
            if pop.maxpool:
                (proj,) = graph.incoming(k)
                pool_acc[k] += out[proj.src]
                s = maxpool_gate(pool_acc[k], out[proj.src], graph.shape(proj.src), proj.kernel)
                spikes[k - 1][t] = s
                out[k] = s
                continue
            acc = V[k - 1]
            for proj, wt, fan, bound in plan:
                if proj.dst != k:
                    continue
                src = out[proj.src]
                if isinstance(proj, Conv):
                    acc = acc + conv_exact(src, proj, graph.shape(proj.src))
                    reach = Conv(proj.src, proj.dst, (proj.weights != 0).astype(np.int64), 8,
                                 proj.stride, proj.padding)
                    synops += conv_exact((src != 0).astype(np.int64), reach,
                                         graph.shape(proj.src)).sum(axis=1)
                else:
                    acc = acc + _matmul_exact(src, wt, bound + 1)
                    synops += (src != 0).astype(np.int64) @ fan
            s, V[k - 1] = neuron_step(acc + pop.bias, pop.theta, pop.s_max, pop.v_min, pop.v_max,
                                      pop.spiking)
            spikes[k - 1][t] = s
            out[k] = s
    for k, acc in pool_acc.items():
        (proj,) = graph.incoming(k)
        c, h, w = graph.shape(proj.src)
        kk = proj.kernel
        ho, wo = h // kk, w // kk
        win = acc.reshape(B, c, h, w)[:, :, :ho * kk, :wo * kk].reshape(B, c, ho, kk, wo, kk)
        win = win.transpose(0, 1, 2, 4, 3, 5).reshape(B, -1, kk * kk)
        V[k - 1] = win.max(axis=-1) * 64 + np.argmax(win, axis=-1)
    spike_counts = np.stack([(s != 0).sum(axis=(0, 2)) for s in spikes], axis=1).astype(np.int64)
    spike_strength = np.stack([s.sum(axis=(0, 2)) for s in spikes], axis=1).astype(np.int64)
    if graph.readout is Readout.MEMBRANE:
        prediction = argmax_lowest(V[-1])
    else:
        prediction = argmax_lowest(spikes[-1].sum(axis=0))
    return RunResult(spikes=spikes, v_final=V, prediction=prediction, synops=synops,
                     input_events=x_nonzero.sum(axis=1) * T, spike_counts=spike_counts,
                     spike_strength=spike_strength)
