"""Twin of :class:`snnc.hw.array.TileArray`: the results of every tile and the exact cycles.

Results (membranes, spikes, counters) are computed per tile from the tile images, layer by layer
and vectorized over the batch, as :class:`snnc.sim.core.CoreModel` computes one core's: a tile
adds the events of every population it receives into its neurons and sweeps its parts. Cycles
come from stepping, clock by clock, each tile core's schedule (the ``ACTIVE`` steps of
docs/architecture.md, "Tiles", with the cycles at which it takes an inbox token or hands an
event to its router), the mesh's twin (:class:`snnc.sim.mesh.MeshModel`), the inboxes
(``SyncFIFOBuffered``) and the host port, with the same rules as the RTL. Stretches in which
nothing moves but the cores' own work are skipped in one step.

Per tile and timestep the ``ACTIVE`` cycles are::

    input_phase + sum over input events it receives       max(fanout, 1)
  + sum over populations p >= 1                          (drain + part_size[p] + sweep_latency)
  + sum over spiking p >= 1   (emit_eol + input_phase + sum over p's spikes it receives
                                                              max(fanout, 1))
  + emit_eot
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..hw.mapping import ArrayImage, check_fits, clear_length
from ..hw.params import TIMING, ArrayParams, SourceMode
from .core import CoreModel, _Gate
from .mesh import MeshModel

__all__ = ["ArrayModel", "ArrayRun"]


@dataclass
class ArrayRun:
    """What the array produces for ``B`` samples over ``T`` timesteps.

    Attributes
    ----------
    spikes : list per population p >= 1 of int64 (T, B, size_p)
        Every population's spikes, whole (the same as a single core's).
    v_final : list per tile of int64 (B, tile neurons)
        Each tile's membranes after the last timestep (its parts, in tile numbering).
    v_global : int64 (B, n_neurons)
        The same, in the single core's numbering.
    events : list per sample of list per tile of (t, pop, index, strength)
        Each tile's spikes in the order it sends them (``index`` within the population).
    monitor : list per sample of list per tile of (cycle, pop, index, strength, eot)
        Everything each tile's core hands over, with the cycle (the start pulse is cycle 0);
        only with ``cycles=True``.
    synops, active, total : int64 (B, n_tiles)
        Per tile: synaptic operations, ``ACTIVE`` and ``TOTAL`` (``TOTAL`` only with
        ``cycles=True``).
    spike_counts : int64 (B, n_tiles, n_pops)
    cycles : int64 (B,)
        The array's latency: the last tile's ``TOTAL``.
    traffic : int64 (B,)
        Flits the tiles and the host inject into the mesh per inference.
    """
    spikes: list
    v_final: list
    v_global: np.ndarray
    events: list
    synops: np.ndarray
    active: np.ndarray
    spike_counts: np.ndarray
    traffic: np.ndarray
    monitor: list = field(default_factory=list)
    total: np.ndarray | None = None
    cycles: np.ndarray | None = None
    inbox_high_water: np.ndarray | None = None


class ArrayModel:
    """Event-level and cycle-level model of the array built from ``params``."""

    def __init__(self, params: ArrayParams):
        if not isinstance(params, ArrayParams):
            raise TypeError(f"expected ArrayParams, not {params!r}")
        self.params = params

    def run(self, image: ArrayImage, x, timesteps: int, *, cycles: bool = True) -> ArrayRun:
        p = self.params
        if image.n_tiles != p.n_tiles:
            raise ValueError(f"the image is for {image.n_tiles} tiles, the array has {p.n_tiles}")
        x = np.asarray(x, dtype=np.int64)
        x = x[None, :] if x.ndim == 1 else x.reshape(x.shape[0], -1)
        B, T, K, N = x.shape[0], int(timesteps), image.n_pops, image.n_tiles
        if x.shape[1] != image.pop_sizes[0]:
            raise ValueError(f"inputs have {x.shape[1]} values, the network has {image.pop_sizes[0]}")
        for img in image.tiles:
            check_fits(img, p.tile, T)
        cm = CoreModel(p.tile)
        received = [[k for k in range(K) if image.receives(t, k)] for t in range(N)]
        mats, reach, gates = [{} for _ in range(N)], [{} for _ in range(N)], [{} for _ in range(N)]
        gate_at = [{} for _ in range(N)]
        # Per tile and received population: its source window, which of those sources' events
        # arrive (those of the parts whose tiles send to it), and each one's walk cycles.
        window, arrive, cost = [{} for _ in range(N)], [{} for _ in range(N)], [{} for _ in range(N)]
        for t, img in enumerate(image.tiles):
            for k in received[t]:
                a, b = window[t][k] = img.source_window(k)
                sb = img.pops[k]["SBASE"] + a
                cost[t][k] = np.maximum(img.ptr_count[sb:sb + b - a], 1)
                on = np.zeros(b - a, bool)
                for u in range(N):
                    lo, hi = image.parts[u][k] if k else (0, image.pop_sizes[0])
                    if image.dst[u][k] >> t & 1:
                        on[max(lo, a) - a:max(min(hi, b) - a, 0)] = True
                arrive[t][k] = on
                if img.pops[k]["SMODE"] == SourceMode.POOL:
                    g = gates[t][k] = _Gate(cm._entries(img, k), img, B)
                    gate_at[t][next(d for d, q in enumerate(img.pops) if q["GATE"] and q["SIZE"]
                                    and q["NBASE"] == g.nbase)] = g
                else:
                    mats[t][k], reach[t][k] = cm._fanout(img, k)
        V = [np.zeros((B, img.n_neurons), np.int64) for img in image.tiles]
        spikes = [np.zeros((T, B, image.pop_sizes[k]), np.int64) for k in range(1, K)]
        synops = np.zeros((B, N), np.int64)
        active = np.zeros((B, N), np.int64)
        counts = np.zeros((B, N, K), np.int64)
        x_on = x != 0
        lat = p.tile.sweep_latency
        for ts in range(T):
            for t in range(N):
                active[:, t] += TIMING.input_phase + TIMING.emit_eot
                if 0 in received[t]:
                    V[t] += x @ mats[t][0]
                    synops[:, t] += (x_on * reach[t][0]).sum(axis=1)
                    active[:, t] += (x_on * arrive[t][0] * cost[t][0]).sum(axis=1)
            for k in range(1, K):
                s_k = spikes[k - 1][ts]
                for t, img in enumerate(image.tiles):
                    pk = img.pops[k]
                    lo, hi = image.parts[t][k]
                    active[:, t] += TIMING.drain + (hi - lo) + lat
                    if hi == lo:
                        continue
                    nb, n = pk["NBASE"], pk["SIZE"]
                    if pk["GATE"]:
                        s = gate_at[t][k].sweep()
                    else:
                        u = V[t][:, nb:nb + n] + img.bias[nb:nb + n]
                        s = np.where(u >= pk["THETA"], np.minimum(u // pk["THETA"], pk["SMAX"]), 0) \
                            if pk["SPIKING"] else np.zeros_like(u)
                        V[t][:, nb:nb + n] = np.clip(u - s * pk["THETA"], pk["VMIN"], pk["VMAX"])
                    s_k[:, lo:hi] = s
                    counts[:, t, k] += (s != 0).sum(axis=1)
                if not image.tiles[0].pops[k]["SPIKING"]:
                    continue
                on = s_k != 0
                for t in range(N):
                    active[:, t] += TIMING.emit_eol + TIMING.input_phase
                    if k not in received[t]:
                        continue
                    a, b = window[t][k]
                    active[:, t] += (on[:, a:b] * arrive[t][k] * cost[t][k]).sum(axis=1)
                    if k in gates[t]:
                        gates[t][k].events(s_k[:, a:b])
                    else:
                        V[t] += s_k[:, a:b] @ mats[t][k]
                        synops[:, t] += (on[:, a:b] * reach[t][k]).sum(axis=1)
        for t in range(N):
            for g in gates[t].values():
                V[t][:, g.nbase:g.nbase + g.n] = g.state()
        n_global = sum(image.pop_sizes[1:])
        v_global = np.zeros((B, n_global), np.int64)
        nbase = np.cumsum([0] + list(image.pop_sizes[1:]))
        for t, img in enumerate(image.tiles):
            for k in range(1, K):
                lo, hi = image.parts[t][k]
                nb = img.pops[k]["NBASE"]
                v_global[:, nbase[k - 1] + lo:nbase[k - 1] + hi] = V[t][:, nb:nb + hi - lo]
        events = [[[(ts, k, lo + int(i), int(spikes[k - 1][ts, b, lo + i]))
                    for ts in range(T) for k in range(1, K)
                    for lo, hi in [image.parts[t][k]]
                    for i in np.flatnonzero(spikes[k - 1][ts, b, lo:hi])]
                   for t in range(N)] for b in range(B)]
        spiking = [k for k in range(1, K) if image.tiles[0].pops[k]["SPIKING"]]
        traffic = T * (x_on.sum(axis=1) + 1) + T * N * len(spiking) + sum(
            (spikes[k - 1] != 0).sum(axis=(0, 2)) for k in spiking)
        run = ArrayRun(spikes=spikes, v_final=V, v_global=v_global, events=events, synops=synops,
                       active=active, spike_counts=counts, traffic=traffic)
        if cycles:
            run.monitor, run.total, run.inbox_high_water = [], np.zeros((B, N), np.int64), \
                np.zeros((B, N), np.int64)
            for b in range(B):
                sim = _Cosim(p, image, x[b], [s[:, b] for s in spikes], T, cost, window)
                sim.run()
                if not np.array_equal(sim.active, active[b]):
                    raise AssertionError(f"co-simulation ACTIVE {sim.active} != {active[b]}")
                run.monitor.append(sim.monitor)
                run.total[b] = sim.total
                run.inbox_high_water[b] = sim.high
            run.cycles = run.total.max(axis=1)
        return run


class _Inbox:
    """``amaranth.lib.fifo.SyncFIFOBuffered``: an inner queue of ``depth - 1`` and an output
    register that loads from it in the cycle after a write at the earliest."""

    def __init__(self, depth: int):
        self.depth, self.inner, self.out, self.high = depth, deque(), None, 0

    def ready(self) -> bool:
        return self.out is not None

    def settled(self) -> bool:
        return not self.inner or self.out is not None

    def step(self, item, read: bool) -> bool:
        """One edge: ``read`` takes the output (when ready); ``item`` is written (or None).
        Returns False when the write found the queue full."""
        full = len(self.inner) == self.depth - 1
        inner_read = bool(self.inner) and (self.out is None or read)
        self.out = self.inner.popleft() if inner_read else (None if read else self.out)
        if item is not None and not full:
            self.inner.append(item)
        self.high = max(self.high, len(self.inner) + (self.out is not None))
        return item is None or not full


class _Cosim:
    """One sample on the array, clock by clock (see the module docstring)."""

    def __init__(self, p: ArrayParams, image: ArrayImage, x, spikes, T: int, cost, window):
        self.p, self.image, self.T, self.cost = p, image, T, cost
        self.base = [{k: w[0] for k, w in win.items()} for win in window]
        N = self.N = image.n_tiles
        self.mesh = MeshModel(p.mesh)
        self.inbox = [[_Inbox(p.inbox_depth) for _ in range(2)] for _ in range(N)]
        self.eol = [[0, 0] for _ in range(N)]
        self.out = [None] * N                 # each core's output register: payload or None
        self.monitor = [[] for _ in range(N)]
        self.active = np.zeros(N, np.int64)
        self.total = np.zeros(N, np.int64)
        self.high = np.zeros(N, np.int64)
        self.running = [True] * N
        nz = np.flatnonzero(x)
        tokens = [(int(i), int(x[i]), 0) for i in nz] + [(0, 0, 1)]
        self.host = deque(tokens * T)
        self.released, self.eots = True, 0
        self.spikes = spikes
        self.procs = [self._core(t) for t in range(N)]
        self.act = [None] * N
        self._read = [None] * N
        self.wait = [clear_length(img) + 1 for img in image.tiles]   # CLEAR cycles
        for t in range(N):
            self.act[t] = next(self.procs[t])

    # A tile core's schedule, one action per ACTIVE step: ("steps", n), ("fetch", inbox),
    # ("emit", payload) (payload (pop, index, value, eol), or "EOT").
    def _receive(self, t: int, k: int):
        sel = k & 1
        tok = yield ("fetch", sel)
        if tok[2]:
            yield ("steps", 1)
            return
        base = self.base[t][k]
        prev = int(self.cost[t][k][tok[0] - base])
        while True:
            tok = yield ("fetch", sel)
            if tok[2]:
                yield ("steps", prev)
                return
            if prev > 1:
                yield ("steps", prev - 1)
            prev = int(self.cost[t][k][tok[0] - base])

    def _core(self, t: int):
        image, lat = self.image, self.p.tile.sweep_latency
        pops = image.tiles[t].pops
        for ts in range(self.T):
            yield from self._receive(t, 0)
            for k in range(1, image.n_pops):
                yield ("steps", TIMING.drain)
                lo, hi = image.parts[t][k]
                s = self.spikes[k - 1][ts, lo:hi]
                r = 0
                for i in np.flatnonzero(s):
                    at = int(i) + lat
                    if at > r:
                        yield ("steps", at - r)
                    yield ("emit", (k, lo + int(i), int(s[i]), 0))
                    r = at + 1
                if hi - lo + lat > r:
                    yield ("steps", hi - lo + lat - r)
                if pops[k]["SPIKING"]:
                    yield ("emit", (k, 0, 0, 1))
                    yield from self._receive(t, k)
            yield ("emit", "EOT")
        yield ("done", None)

    def run(self) -> None:
        N, mesh, image = self.N, self.mesh, self.image
        all_tiles = (1 << N) - 1
        cycle = 0
        while True:
            cycle += 1
            if not any(self.running) and all(o is None for o in self.out):
                break
            in_ready, eject = mesh.outputs()
            ready = [self.out[t] == "EOT" or in_ready[t] for t in range(N)]
            offered = [None] * N
            for t in range(N):
                o = self.out[t]
                if o is not None and o != "EOT":
                    offered[t] = (all_tiles if o[3] else image.dst[t][o[0]], o)
            busy = any(self.running[t] or self.out[t] is not None for t in range(N))
            host_go = self.released and busy and offered[0] is None and self.host
            if host_go:
                i, v, eot = self.host[0]
                offered[0] = (all_tiles if eot else image.dst[0][0], (0, i, v, eot))
            injected, _ = mesh.step(offered, [True] * N)
            if host_go and injected[0]:
                if self.host.popleft()[2]:
                    self.released = False
            total = self.eots + sum(self._core_cycle(t, cycle, ready[t]) for t in range(N))
            if total == N:
                self.eots, self.released = 0, True
            else:
                self.eots = total
            for t in range(N):
                self._inbox_cycle(t, eject[t])
            cycle += self._skip()

    def _core_cycle(self, t: int, cycle: int, ready: bool) -> bool:
        """One cycle of tile ``t``'s core; returns whether its output handed over an EOT."""
        o = self.out[t]
        stall_out = o is not None and not ready
        if o is not None and ready:
            self.monitor[t].append((cycle,) + ((0, 0, 0, 1) if o == "EOT" else o))
            self.out[t] = None
        eot = o == "EOT" and ready
        self._read[t] = None
        if not self.running[t] or stall_out:
            return eot
        if self.wait[t]:
            self.wait[t] -= 1
            return eot
        kind, arg = self.act[t]
        if kind == "fetch":
            box = self.inbox[t][arg]
            if not box.ready():
                return eot
            self._read[t] = arg
            nxt = self.procs[t].send(box.out)
        elif kind == "emit":
            self.out[t] = arg
            nxt = next(self.procs[t])
        else:
            if arg > 1:
                nxt = ("steps", arg - 1)
            else:
                nxt = next(self.procs[t])
        self.active[t] += 1
        self.act[t] = nxt
        if kind == "emit" and arg == "EOT" and nxt[0] == "done":
            self.running[t] = False
            self.total[t] = cycle
        return eot

    def _inbox_cycle(self, t: int, flit) -> None:
        item, sel = None, None
        if flit is not None:
            pop, index, value, eol = flit[1]
            sel = pop & 1
            if eol:
                expect = 1 if pop == 0 else self.N
                if self.eol[t][sel] + 1 == expect:
                    self.eol[t][sel] = 0
                    item = (0, 0, 1)
                else:
                    self.eol[t][sel] += 1
            else:
                item = (index, value, 0)
        for i in range(2):
            ok = self.inbox[t][i].step(item if sel == i else None, self._read[t] == i)
            if not ok:
                raise AssertionError(f"tile {t}: inbox {i} overflowed")
        self.high[t] = max(self.high[t], max(b.high for b in self.inbox[t]))

    def _skip(self) -> int:
        """Jump over cycles in which only the cores' own steps advance: nothing in the mesh or
        in flight into an inbox, no output register full, the host with nothing it may send.
        Each core then either steps (its current run of plain steps), waits for a token that
        cannot come yet, or clears; the jump stops one cycle before the first of them changes.
        Returns the cycles skipped."""
        if any(o is not None for o in self.out):
            return 0
        if self.released and self.host and any(self.running):
            return 0
        for r in self.mesh.routers.values():
            if not r.idle():
                return 0
        if not all(b.settled() for boxes in self.inbox for b in boxes):
            return 0
        jump = None
        for t in range(self.N):
            if not self.running[t]:
                continue
            if self.wait[t]:
                n = self.wait[t]
            elif self.act[t][0] == "steps":
                n = self.act[t][1] - 1
            elif self.act[t][0] == "fetch" and not self.inbox[t][self.act[t][1]].ready():
                continue
            else:
                return 0
            jump = n if jump is None else min(jump, n)
        if not jump:
            return 0
        for t in range(self.N):
            if not self.running[t]:
                continue
            if self.wait[t]:
                self.wait[t] -= jump
            elif self.act[t][0] == "steps":
                self.act[t] = ("steps", self.act[t][1] - jump)
                self.active[t] += jump
        return jump
