"""Vectorized integer reference model: the definition of snnc's numeric contract.

It runs a :class:`snnc.ir.Graph` on a batch of integer inputs with the exact semantics written in
``docs/architecture.md``. The cycle-accurate simulator and the RTL must reproduce its spikes,
membranes and counters bit for bit.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..ir import Conv, Graph, MaxPool, Readout

__all__ = ["RunResult", "neuron_step", "run", "batch_limit", "BATCH_BYTES", "check_inputs",
           "argmax_lowest", "maxpool_gate", "conv_exact"]

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


def _exact_dtype(bound: int):
    """The narrowest arithmetic that holds every integer of magnitude <= ``bound`` exactly:
    float32 below 2**24, float64 below 2**53, else int64 (``None``)."""
    if bound < 1 << 24:
        return np.float32
    if bound < _EXACT_F64:
        return np.float64
    return None


def _source_magnitude(graph: Graph, src: int) -> int:
    if src == 0:
        lo, hi = graph.input.value_range
        return max(abs(int(lo)), abs(int(hi)))
    pop = graph.pop(src)
    return 0 if not pop.spiking and not pop.maxpool else int(pop.s_max)


def _layer_plan(graph: Graph, k: int, force_int64: bool = False):
    """Population ``k``'s arithmetic: the dtype that keeps ``U = V + input + bias`` and every
    partial sum exact (from the weights' absolute row sums, the sources' ranges, the state's
    clamps and the bias), and its incoming projections with their weights in that dtype."""
    pop = graph.pop(k)
    bound = max(abs(int(pop.v_min)), abs(int(pop.v_max))) + int(np.abs(pop.bias).max(initial=0))
    projs = []
    for proj in graph.incoming(k):
        mag = _source_magnitude(graph, proj.src)
        if isinstance(proj, Conv):
            bound += int(np.abs(proj.weights).reshape(proj.weights.shape[0], -1).sum(axis=1)
                         .max(initial=0)) * mag
        else:
            bound += int(np.abs(proj.weights).sum(axis=1).max(initial=0)) * mag
        projs.append(proj)
    dtype = None if force_int64 else _exact_dtype(bound)
    plan = []
    for proj in projs:
        if isinstance(proj, Conv):
            reach = Conv(proj.src, proj.dst, (proj.weights != 0).astype(np.int64), 8,
                         proj.stride, proj.padding)
            plan.append((proj, None, None, reach))
        else:
            wt = np.ascontiguousarray(proj.weights.T).astype(dtype or np.int64)
            fan = np.count_nonzero(proj.weights, axis=0).astype(np.int64)
            plan.append((proj, wt, fan, None))
    return dtype, plan


_PLANS: "OrderedDict[tuple, tuple]" = OrderedDict()


def _plans_for(graph: Graph, force_int64: bool) -> dict:
    """Every non-pool population's :func:`_layer_plan`, remembered for the last 16 graphs (a
    graph is immutable, its arrays read-only; the cache holds the graph, so its id stays its)."""
    key = (id(graph), force_int64)
    hit = _PLANS.get(key)
    if hit is not None and hit[0] is graph:
        _PLANS.move_to_end(key)
        return hit[1]
    plans = {k: _layer_plan(graph, k, force_int64) for k in range(1, graph.n_pops)
             if not graph.pop(k).maxpool}
    _PLANS[key] = (graph, plans)
    while len(_PLANS) > 16:
        _PLANS.popitem(last=False)
    return plans


#: Memory one :func:`run` call may take for its per-timestep arrays; see :func:`batch_limit`.
BATCH_BYTES = 1 << 30


def batch_limit(graph: Graph, timesteps: int) -> int:
    """Most samples per :func:`run` call that keep its arrays near :data:`BATCH_BYTES`.

    :func:`run` keeps every population's spikes for every timestep, so its memory grows with
    ``timesteps * samples * neurons``: 23-36 bytes per such element on the demo MLP and CNN at
    T = 1024-2048 (peak RSS less the 230 MB of imports); 48 leaves a margin.
    """
    neurons = graph.input.size + sum(p.size for p in graph.populations)
    return max(1, BATCH_BYTES // (48 * int(timesteps) * neurons))


def run(graph: Graph, x, timesteps: int | None = None, *, arithmetic: str = "narrow") -> RunResult:
    """Run ``graph`` on integer inputs ``x`` (shape (B, ...) ) for ``timesteps`` steps.

    The network is feed-forward, so the run goes population by population, each for all
    timesteps: the synaptic input of every timestep in one product (``T*B`` rows), then the
    neuron update timestep by timestep. Each population computes in the narrowest exact
    arithmetic (:func:`_layer_plan`): float32 when every value its update can reach stays below
    2**24 in magnitude, float64 below 2**53, int64 otherwise. The input is the same at every
    timestep, so its contribution is computed once. Synaptic operations are counted from each
    source's nonzero count summed over the timesteps (they are linear in it).
    ``arithmetic="int64"`` computes every population in int64 instead: the same results, for
    checking the narrow arithmetic (tests/sim/test_reference.py).
    """
    if arithmetic not in ("narrow", "int64"):
        raise ValueError(f"arithmetic must be 'narrow' or 'int64', not {arithmetic!r}")
    x = check_inputs(graph, x)
    T = graph.timesteps if timesteps is None else int(timesteps)
    if T < 1:
        raise ValueError(f"timesteps must be >= 1, not {T}")
    B = x.shape[0]
    pops = graph.populations
    K = graph.n_pops
    V = [None] * len(pops)
    spikes = [None] * len(pops)
    seq = {}                             # population -> its spikes at every timestep (T, B, n)
    active = {0: (x != 0).astype(np.int64) * T}     # per source: nonzero events over the run
    strength = {}
    pool_acc = {}
    plans = _plans_for(graph, arithmetic == "int64")

    def contribution(proj, wt, dtype, src):
        """One projection's input for rows ``src`` (R, n_src), in ``dtype`` (None: int64)."""
        if isinstance(proj, Conv):
            c = conv_exact(src, proj, graph.shape(proj.src))
            return c if dtype is None else c.astype(dtype)
        return src.astype(dtype or np.int64, copy=False) @ wt

    for k in range(1, K):
        pop = pops[k - 1]
        n = pop.size
        if pop.maxpool:
            (proj,) = graph.incoming(k)
            src = seq[proj.src].astype(np.int64, copy=False)
            acc = np.zeros((B, graph.size(proj.src)), dtype=np.int64)
            out = np.zeros((T, B, n), dtype=np.int64)
            for t in range(T):
                acc += src[t]
                out[t] = maxpool_gate(acc, src[t], graph.shape(proj.src), proj.kernel)
            pool_acc[k] = acc
        else:
            dtype, plan = plans[k]
            work = dtype or np.int64
            # The drive (synaptic input plus bias) of every timestep; (B, n) when it is the same
            # at every timestep (the population hears only the input).
            const = pop.bias.astype(work) + np.zeros((B, n), dtype=work)
            drive = None
            for proj, wt, _, _ in plan:
                if proj.src == 0:       # the same input every timestep: computed once
                    const += contribution(proj, wt, dtype, x)
                else:
                    c = contribution(proj, wt, dtype, seq[proj.src].reshape(T * B, -1))
                    c = c.reshape(T, B, n)
                    drive = c if drive is None else np.add(drive, c, out=drive)
            if drive is not None:
                drive += const
            v = np.zeros((B, n), dtype=work)
            out = np.zeros((T, B, n), dtype=work)
            u, q = np.empty_like(v), np.empty_like(v)
            for t in range(T):
                np.add(v, const if drive is None else drive[t], out=u)
                if dtype is None:
                    out[t], v = neuron_step(u, pop.theta, pop.s_max, pop.v_min, pop.v_max,
                                            pop.spiking)
                elif pop.spiking:
                    # neuron_step in float32/float64, in place: the quotient of two integers is
                    # correctly rounded, so below 2**24 / 2**53 its floor is the integer quotient
                    np.divide(u, pop.theta, out=q)
                    np.floor(q, out=q)
                    np.clip(q, 0, pop.s_max, out=out[t])
                    np.multiply(out[t], pop.theta, out=q)
                    np.subtract(u, q, out=v)
                    np.clip(v, pop.v_min, pop.v_max, out=v)
                else:
                    np.clip(u, pop.v_min, pop.v_max, out=v)
            V[k - 1] = v.astype(np.int64, copy=False)
        seq[k] = out
        # Spikes are integers in [0, s_max]; below 256 a cast through uint8 is the fast one.
        spikes[k - 1] = (out.astype(np.uint8) if out.dtype != np.int64 and pop.s_max < 256
                         else out).astype(np.int64, copy=False)
        # Events per source over the run and spike strength per sample: float sums are exact
        # while they stay below 2**24 (float32) or 2**53 (float64); spikes are never negative.
        if pop.maxpool or pop.spiking:
            if out.dtype == np.int64:
                active[k] = (out > 0).sum(axis=0)
                strength[k] = out.sum(axis=(0, 2))
            else:
                events = out if pop.s_max == 1 else np.minimum(out, 1)
                active[k] = np.add.reduce(events, axis=0).astype(np.int64)
                wide = T * n * pop.s_max >= 1 << 24
                strength[k] = out.sum(axis=(0, 2), dtype=np.float64 if wide else None
                                      ).astype(np.int64)
        else:
            active[k] = np.zeros((B, n), dtype=np.int64)
            strength[k] = np.zeros(B, dtype=np.int64)
    synops = np.zeros(B, dtype=np.int64)
    for k, (dtype, plan) in plans.items():
        for proj, _, fan, reach in plan:
            if reach is not None:
                synops += conv_exact(active[proj.src], reach, graph.shape(proj.src)).sum(axis=1)
            else:
                synops += active[proj.src] @ fan
    x_nonzero = active[0] // T
    for k, acc in pool_acc.items():
        (proj,) = graph.incoming(k)
        c, h, w = graph.shape(proj.src)
        kk = proj.kernel
        ho, wo = h // kk, w // kk
        win = acc.reshape(B, c, h, w)[:, :, :ho * kk, :wo * kk].reshape(B, c, ho, kk, wo, kk)
        win = win.transpose(0, 1, 2, 4, 3, 5).reshape(B, -1, kk * kk)
        V[k - 1] = win.max(axis=-1) * 64 + np.argmax(win, axis=-1)
    spike_counts = np.stack([active[k].sum(axis=1) for k in range(1, K)], axis=1)
    spike_strength = np.stack([strength[k] for k in range(1, K)], axis=1)
    if graph.readout is Readout.MEMBRANE:
        prediction = argmax_lowest(V[-1])
    else:
        prediction = argmax_lowest(spikes[-1].sum(axis=0))
    return RunResult(spikes=spikes, v_final=V, prediction=prediction, synops=synops,
                     input_events=x_nonzero.sum(axis=1) * T, spike_counts=spike_counts,
                     spike_strength=spike_strength)
