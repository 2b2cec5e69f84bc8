"""Twin model of :class:`snnc.hw.core.Core`: bit-exact results and the exact cycle count.

The model reads the same memory images the core loads (:class:`snnc.hw.mapping.CoreImage`),
unpacks the packed weights the way the hardware does, and processes a timestep per phase, with
whole batches vectorized. Cycle counts are computed per phase from the events (never by stepping
a loop per clock), with the fixed costs in :data:`snnc.hw.params.TIMING`:

per timestep ``t``::

    input_phase + sum over nonzero inputs i      max(issues[i], input_event) + stall[i]
  + sum over populations p >= 1                 (drain + groups[p] + sweep_latency)
  + sum over spiking p >= 1   (spike_phase + sum over spikes j of p
                                               max(issues[j], spike_event) + stall[j])
  + emit_eot

where ``groups[p]`` is the number of membrane rows (``lanes`` neurons, ``n // lanes``) the
population's neurons occupy plus, per row, its spikes beyond the first (``size[p]`` at one
lane), a source's ``issues`` is ``ceil(fanout / lanes)`` and its ``stall`` the membrane-bank
conflicts of its list (:meth:`CoreModel._walk_cost`; both 0-stall and ``issues = fanout`` at
one lane).

A core that walks the input once (``CoreParams.input_current_depth > 0``) walks it only at
``t = 0``; at ``t > 0`` the input phase is ``input_token`` per nonzero input plus
``input_skip_eot``, and ``synops`` counts the input's operations once (what the hardware does).

That count is the core's ``ACTIVE`` counter: cycles neither waiting for input nor stalled by the
output stream. Input gaps and output backpressure add cycles to ``TOTAL`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..hw.mapping import CoreImage, check_fits, clear_length
from ..hw.params import TIMING, CoreParams, SourceMode, issue_stalls

__all__ = ["CoreModel", "CoreRun", "unpack_weights"]


def unpack_weights(words: np.ndarray, start_word: int, n: int, wshift: int,
                   lanes: int = 1) -> np.ndarray:
    """Weights ``0..n-1`` of a region starting at bank-local word ``start_word``, as the core's
    weight banks and sub-word mux read them (:func:`snnc.hw.mapping.pack_banked`)."""
    per = 1 << wshift
    bits = 8 >> wshift
    e = np.arange(n, dtype=np.int64)
    row = e // lanes
    word = words[(start_word + (row >> wshift)) * lanes + e % lanes] if n else np.zeros(0, np.int64)
    raw = (word >> (bits * (row & (per - 1)))) & ((1 << bits) - 1)
    return np.where(raw >= (1 << (bits - 1)), raw - (1 << bits), raw)


@dataclass
class CoreRun:
    """What the core produces for a batch of ``B`` samples over ``T`` timesteps.

    Attributes
    ----------
    events : list (per sample) of list of (t, pop, index, strength)
        Output spike events in the order the core emits them (an end-of-timestep event is
        implied after each timestep's spikes and is not listed).
    v_final : int64 (B, n_neurons)
        Membranes after the last timestep, indexed by global neuron number.
    spikes : list per population p >= 1 of int64 (T, B, size_p)
    synops : int64 (B,)
    spike_counts : int64 (B, n_pops) (column 0, the input population, is always 0)
    cycles : int64 (B,)
        The ``ACTIVE`` cycle counter.
    cycles_per_timestep : int64 (B, T)
    cycles_per_phase : dict
        ``"input"`` -> (B, T), ``("pop", p)`` -> (B, T): sweep plus fan-out of population p.
    clear_cycles : int
        Cycles of the clear sweep after ``start`` (counted in ``TOTAL``, not in ``ACTIVE``).
    bank_stalls : int64 (B,)
        Cycles of ``cycles`` the synapse lanes lost to membrane-bank conflicts (0 at 1 lane).
    sweep_stalls : int64 (B,)
        Cycles of ``cycles`` a sweep of ``lanes`` neurons per cycle waited to emit its spikes
        one per cycle (0 at 1 lane).
    """
    events: list
    v_final: np.ndarray
    spikes: list
    synops: np.ndarray
    spike_counts: np.ndarray
    cycles: np.ndarray
    cycles_per_timestep: np.ndarray
    cycles_per_phase: dict = field(default_factory=dict)
    clear_cycles: int = 0
    spike_buffer_high_water: np.ndarray | None = None
    bank_stalls: np.ndarray | None = None
    sweep_stalls: np.ndarray | None = None
    lanes: int = 1

    def occupancy(self, b: int) -> dict:
        """Utilization figures of sample ``b`` (JSON-ready).

        ``synapse_pipeline``: synaptic operations per active cycle and lane (the fraction of the
        lanes' cycles that applied a weight); ``neuron_unit``: fraction in which the neuron unit took a neuron;
        ``spike_buffer_high_water``: most spikes buffered at once, per population, against the
        buffer depth.
        """
        cyc = int(self.cycles[b])
        neurons = sum(s.shape[2] for s in self.spikes) * self.cycles_per_timestep.shape[1]
        return {
            "active_cycles": cyc,
            "synapse_pipeline": float(self.synops[b]) / (cyc * self.lanes) if cyc else 0.0,
            "neuron_unit": neurons / cyc if cyc else 0.0,
            "spike_buffer_high_water": [int(v) for v in self.spike_buffer_high_water[b]],
        }


class CoreModel:
    """Event-level model of the tile built from the same :class:`CoreParams` as the hardware."""

    def __init__(self, params: CoreParams):
        if not isinstance(params, CoreParams):
            raise TypeError(f"expected CoreParams, not {params!r}")
        self.params = params

    def _entries(self, image: CoreImage, k: int):
        """Every (source, entry) pair of population ``k``'s fan-out, decoded as the core does.

        Returns ``(src, target, weight, valid, member)`` arrays: for a convolution entry the
        target comes from the reciprocal division and bounds checks of the synapse pipeline.
        """
        p = self.params
        pop = image.pops[k]
        a, b = image.source_window(k)
        n_src = b - a                        # sources a .. b - 1, numbered from 0 here
        sb = pop["SBASE"] + a
        start = image.ptr_start[sb:sb + n_src]
        count = image.ptr_count[sb:sb + n_src]
        total = int(count.sum())
        src = np.repeat(np.arange(n_src), count)
        rel = (np.repeat(start, count) + np.arange(total) -
               np.repeat(np.cumsum(count) - count, count)).astype(np.int64)
        e = pop["TBASE"] + rel
        tgt, ky, kx, conv = image.tgt[e], image.tgt_ky[e], image.tgt_kx[e], image.tgt_conv[e]
        region = int(rel.max()) + 1 if total else 0
        w = unpack_weights(image.wgt, pop["WBASE"], region, pop["WSHIFT"], image.lanes)[rel] \
            if total and pop["SMODE"] != SourceMode.POOL else np.zeros(total, np.int64)
        valid = np.ones(total, dtype=bool)
        if pop["SMODE"] == SourceMode.CONV and total:
            cv = image.convs
            geo = {f: np.array([c[f] for c in cv])[conv] for f in cv[0]}
            ny = image.ptr_y[sb + src] + geo["PAD_Y"] - ky
            nx = image.ptr_x[sb + src] + geo["PAD_X"] - kx
            qy = (np.maximum(ny, 0) * recip_array(geo["STRIDE_Y"], p)) >> p.recip_shift
            qx = (np.maximum(nx, 0) * recip_array(geo["STRIDE_X"], p)) >> p.recip_shift
            valid = ((ny >= 0) & (nx >= 0) & (qy * geo["STRIDE_Y"] == ny) &
                     (qx * geo["STRIDE_X"] == nx) & (qy < geo["OUT_H"]) & (qx < geo["OUT_W"]))
            tgt = tgt + qy * geo["OUT_W"] + qx
        return src, tgt, w, valid, ky * 8 + kx

    def _walk_cost(self, image: CoreImage, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Per source of population ``k``: the walker's issues, ``ceil(count / lanes)``, and
        the bank-conflict stall cycles: an issue whose landing entries put ``m > 1`` targets in
        one membrane bank holds the pipeline ``m - 1`` cycles."""
        L = self.params.lanes
        a, b = image.source_window(k)
        sb = image.pops[k]["SBASE"] + a
        count = image.ptr_count[sb:sb + b - a]
        issues = -(-count // L)
        if L == 1 or image.pops[k]["SMODE"] == SourceMode.POOL or not count.sum():
            return issues, np.zeros_like(issues)
        src, tgt, _, valid, _ = self._entries(image, k)
        pos = np.arange(len(src)) - np.repeat(np.cumsum(count) - count, count)
        return issues, issue_stalls(src[valid], pos[valid], self.params.neuron_bank(tgt[valid]),
                                    len(count), L)

    def _fanout(self, image: CoreImage, k: int):
        """(sources of k in its window) x (all neurons) weight matrix and per-source synapse
        counts."""
        src, tgt, w, valid, _ = self._entries(image, k)
        a, b = image.source_window(k)
        mat = np.zeros((b - a, image.n_neurons), dtype=np.int64)
        mat[src[valid], tgt[valid]] = w[valid]
        return mat, np.bincount(src[valid], minlength=b - a).astype(np.int64)

    def run(self, image: CoreImage, x, timesteps: int) -> CoreRun:
        """Run integer inputs ``x`` (B, n_in), or (B, *input_shape), for ``timesteps`` timesteps."""
        x = np.asarray(x, dtype=np.int64)
        if x.ndim == 1:
            x = x[None, :]
        elif x.ndim > 2:                     # image inputs: the core reads them in C, H, W order
            x = x.reshape(x.shape[0], -1)
        B, T, K = x.shape[0], int(timesteps), image.n_pops
        check_fits(image, self.params, T)
        if x.shape[1] != image.pop_sizes[0]:
            raise ValueError(f"inputs have {x.shape[1]} values, the network has {image.pop_sizes[0]}")
        p = self.params
        pops = image.pops
        sources = [k for k in range(K) if k == 0 or pops[k]["SPIKING"]]
        mats, reach, gates, gate_at = {}, {}, {}, {}
        for k in sources:
            if pops[k]["SMODE"] == SourceMode.POOL:
                gates[k] = _Gate(self._entries(image, k), image, B)
                gate_at[next(d for d, q in enumerate(pops) if q["NBASE"] == gates[k].nbase
                             and q["GATE"])] = gates[k]
            else:
                mats[k], reach[k] = self._fanout(image, k)
        fan, stall = {}, {}
        for k in sources:
            fan[k], stall[k] = self._walk_cost(image, k)
        V = np.zeros((B, image.n_neurons), dtype=np.int64)
        bias = image.bias
        spikes = [np.zeros((T, B, image.pop_sizes[k]), np.int64) for k in range(1, K)]
        synops = np.zeros(B, np.int64)
        stalls = np.zeros(B, np.int64)
        sweep_stalls = np.zeros(B, np.int64)
        counts = np.zeros((B, K), np.int64)
        cyc_t = np.zeros((B, T), np.int64)
        phase = {"input": np.zeros((B, T), np.int64)}
        phase.update({("pop", k): np.zeros((B, T), np.int64) for k in range(1, K)})
        x_on = x != 0
        in_stalls = (x_on * stall[0]).sum(axis=1)
        in_cycles = (x_on * (np.maximum(fan[0], TIMING.input_event) + stall[0])).sum(axis=1) \
            + TIMING.input_phase
        in_synops = (x_on * reach[0]).sum(axis=1)
        # Input walked once: the first timestep walks it (into the input current), the others
        # only consume the tokens; the hardware does (and counts) the input's SOPs once.
        skip_cycles = x_on.sum(axis=1) * TIMING.input_token + TIMING.input_skip_eot
        for t in range(T):
            V += x @ mats[0]
            if t == 0 or not p.input_once:
                synops += in_synops
                stalls += in_stalls
                phase["input"][:, t] = in_cycles
            else:
                phase["input"][:, t] = skip_cycles
            for k in range(1, K):
                pk = pops[k]
                nb, n = pk["NBASE"], pk["SIZE"]
                if pk["GATE"]:
                    s = gate_at[k].sweep()
                else:
                    u = V[:, nb:nb + n] + bias[nb:nb + n]
                    if pk["SPIKING"]:
                        s = np.where(u >= pk["THETA"], np.minimum(u // pk["THETA"], pk["SMAX"]), 0)
                    else:
                        s = np.zeros_like(u)
                    V[:, nb:nb + n] = np.clip(u - s * pk["THETA"], pk["VMIN"], pk["VMAX"])
                spikes[k - 1][t] = s
                c = TIMING.drain + n + p.sweep_latency
                if p.lanes > 1:
                    # one group per membrane row the population touches, each one more cycle
                    # per spike beyond its first
                    L = p.lanes
                    lead = nb % L
                    groups = -(-(lead + n) // L)
                    per = np.pad(s != 0, ((0, 0), (lead, groups * L - n - lead))).reshape(
                        B, groups, L).sum(axis=2)
                    extra = np.maximum(per - 1, 0).sum(axis=1)
                    c = c - n + groups + extra
                    sweep_stalls += extra
                if pk["SPIKING"]:
                    on = s != 0
                    if k in gates:
                        gates[k].events(s)
                    else:
                        V += s @ mats[k]
                        synops += (on * reach[k]).sum(axis=1)
                    counts[:, k] += on.sum(axis=1)
                    c = c + TIMING.spike_phase + (
                        on * (np.maximum(fan[k], TIMING.spike_event) + stall[k])).sum(axis=1)
                    stalls += (on * stall[k]).sum(axis=1)
                phase[("pop", k)][:, t] = c
            cyc_t[:, t] = phase["input"][:, t] + sum(phase[("pop", k)][:, t] for k in range(1, K)) \
                + TIMING.emit_eot
        for gate in gates.values():
            V[:, gate.nbase:gate.nbase + gate.n] = gate.state()
        events = []
        for b in range(B):
            ev = []
            for t in range(T):
                for k in range(1, K):
                    idx = np.flatnonzero(spikes[k - 1][t, b])
                    ev.extend((t, k, int(i), int(spikes[k - 1][t, b, i])) for i in idx)
            events.append(ev)
        high = np.stack([(s != 0).sum(axis=2).max(axis=0) for s in spikes], axis=1)
        return CoreRun(events=events, v_final=V, spikes=spikes, synops=synops, spike_counts=counts,
                       cycles=cyc_t.sum(axis=1), cycles_per_timestep=cyc_t, cycles_per_phase=phase,
                       clear_cycles=clear_length(image) + 1, spike_buffer_high_water=high,
                       bank_stalls=stalls, sweep_stalls=sweep_stalls, lanes=p.lanes)


def recip_array(stride: np.ndarray, params: CoreParams) -> np.ndarray:
    return -(-(1 << params.recip_shift) // np.asarray(stride, dtype=np.int64))


class _Gate:
    """The max-pool gates fed by one source population (vectorized over the batch).

    Holds each member's accumulated strength and each window's (best_acc, best_idx, cur_s);
    :meth:`events` applies one timestep's source spikes, :meth:`sweep` emits and clears cur_s.
    The order in which the core applies events does not matter: the best member is the maximum
    of (accumulated strength, then lowest member index), an associative choice.
    """

    def __init__(self, entries, image: CoreImage, B: int):
        src, tgt, _, _, member = entries
        dst = next(p for p in image.pops
                   if p["GATE"] and p["NBASE"] <= tgt[0] < p["NBASE"] + p["SIZE"])
        self.nbase, self.n = dst["NBASE"], dst["SIZE"]
        self.src, self.win, self.member = src, tgt - self.nbase, member
        self.acc = np.zeros((B, len(src)), np.int64)
        self.best_acc = np.zeros((B, self.n), np.int64)
        self.best_idx = np.zeros((B, self.n), np.int64)
        self.cur = np.zeros((B, self.n), np.int64)

    def events(self, s: np.ndarray) -> None:
        sm = s[:, self.src]
        on = sm != 0
        self.acc += sm
        # key orders candidates by accumulated strength, then by lowest member index.
        key = np.where(on, self.acc * 64 + (63 - self.member), -1)
        best = self.best_acc * 64 + (63 - self.best_idx)
        for b in range(s.shape[0]):
            np.maximum.at(best[b], self.win, key[b])
        new_acc, new_idx = best // 64, 63 - best % 64
        # cur_s: the strength of the final best member if it spiked in this timestep (0 otherwise;
        # the previous sweep cleared it).
        lookup = np.full((s.shape[0], self.n, 64), 0, np.int64)
        rows = np.repeat(np.arange(s.shape[0]), len(self.src))
        lookup[rows, np.tile(self.win, s.shape[0]), np.tile(self.member, s.shape[0])] = sm.reshape(-1)
        spiked = np.take_along_axis(lookup, new_idx[..., None], axis=2)[..., 0]
        self.cur = spiked
        self.best_acc, self.best_idx = new_acc, new_idx

    def sweep(self) -> np.ndarray:
        out, self.cur = self.cur, np.zeros_like(self.cur)
        return out

    def state(self) -> np.ndarray:
        """Gate state as the contract reads it: ``best_acc * 64 + best_idx``."""
        return self.best_acc * 64 + self.best_idx
