"""Cycle-exact twins of :class:`snnc.hw.mesh.Router` and :class:`snnc.hw.mesh.Mesh`.

A flit is a pair ``(dst, payload)`` of ints. :meth:`RouterModel.outputs` gives what the router
shows in the current cycle (each input's ``ready``, each output's flit or ``None``) and
:meth:`RouterModel.step` advances it by one clock edge, given what is offered on the inputs and
which outputs are ready: the same rules, in the same order, as the RTL
(docs/architecture.md, "The mesh").
"""

from __future__ import annotations

from collections import deque

from ..hw.params import MeshParams, Port

__all__ = ["RouterModel", "MeshModel"]

N_PORTS = len(Port)


class RouterModel:
    def __init__(self, params: MeshParams, x: int, y: int):
        if not isinstance(params, MeshParams):
            raise TypeError(f"expected MeshParams, not {params!r}")
        self.params, self.x, self.y = params, x, y
        self.region = [params.region(x, y, port) for port in Port]
        self.fifo = [deque() for _ in range(N_PORTS)]
        self.sent = [0] * N_PORTS
        self.out = [None] * N_PORTS             # the output registers
        self.ptr = [0] * N_PORTS                # round-robin pointers

    def outputs(self) -> tuple[list[bool], list]:
        """``(in_ready, out_flits)`` in the current cycle."""
        return [len(f) < self.params.depth for f in self.fifo], list(self.out)

    def idle(self) -> bool:
        """No flit in any input FIFO or output register."""
        return not any(self.fifo) and all(o is None for o in self.out)

    def _need(self, i: int) -> int:
        dst = self.fifo[i][0][0]
        return sum(((dst & self.region[o]) != 0) << o for o in range(N_PORTS))

    def step(self, offered, out_ready) -> tuple[list[bool], list[bool]]:
        """One clock edge. ``offered[i]`` is the flit on input ``i`` (or ``None``) and
        ``out_ready[o]`` the downstream's ``ready``. Returns which inputs took their flit and
        which outputs handed theirs over in this cycle."""
        depth = self.params.depth
        took = [offered[i] is not None and len(self.fifo[i]) < depth for i in range(N_PORTS)]
        left = [self.out[o] is not None and bool(out_ready[o]) for o in range(N_PORTS)]
        need = [self._need(i) if self.fifo[i] else 0 for i in range(N_PORTS)]
        granted = [0] * N_PORTS
        new_out = list(self.out)
        for o in range(N_PORTS):
            if left[o]:
                new_out[o] = None
            if self.out[o] is not None and not out_ready[o]:
                continue                        # full and not leaving
            for k in range(N_PORTS):
                i = (self.ptr[o] + k) % N_PORTS
                if self.fifo[i] and need[i] >> o & 1 and not self.sent[i] >> o & 1:
                    dst, payload = self.fifo[i][0]
                    new_out[o] = (dst & self.region[o], payload)
                    self.ptr[o] = (i + 1) % N_PORTS
                    granted[i] |= 1 << o
                    break
        for i in range(N_PORTS):
            if self.fifo[i] and (self.sent[i] | granted[i]) == need[i]:
                self.fifo[i].popleft()
                self.sent[i] = 0
            else:
                self.sent[i] |= granted[i]
        for i in range(N_PORTS):
            if took[i]:
                self.fifo[i].append(tuple(offered[i]))
        self.out = new_out
        return took, left


class MeshModel:
    """The mesh of :class:`RouterModel`, wired as :class:`snnc.hw.mesh.Mesh` wires its routers.

    Per cycle: :meth:`outputs` gives each tile's ``inject`` ready and ``eject`` flit, and
    :meth:`step` takes each tile's offered flit and ``eject`` ready."""

    _MOVE = {Port.EAST: (1, 0, Port.WEST), Port.WEST: (-1, 0, Port.EAST),
             Port.SOUTH: (0, 1, Port.NORTH), Port.NORTH: (0, -1, Port.SOUTH)}

    def __init__(self, params: MeshParams):
        self.params = params
        self.routers = {params.position(t): RouterModel(params, *params.position(t))
                        for t in range(params.n_tiles)}

    def outputs(self) -> tuple[list[bool], list]:
        ready, flits = [], []
        for t in range(self.params.n_tiles):
            r_ready, r_out = self.routers[self.params.position(t)].outputs()
            ready.append(r_ready[Port.LOCAL])
            flits.append(r_out[Port.LOCAL])
        return ready, flits

    def step(self, offered, eject_ready) -> tuple[list[bool], list[bool]]:
        """One clock edge for every router. Returns which tiles' flits were injected and which
        tiles' ``eject`` flits were taken."""
        p = self.params
        shown = {xy: r.outputs() for xy, r in self.routers.items()}
        ins, readys = {}, {}
        for (x, y), r in self.routers.items():
            t = y * p.cols + x
            ins[x, y] = [None] * N_PORTS
            readys[x, y] = [False] * N_PORTS
            ins[x, y][Port.LOCAL] = offered[t]
            readys[x, y][Port.LOCAL] = bool(eject_ready[t])
            for port, (dx, dy, back) in self._MOVE.items():
                there = (x + dx, y + dy)
                if there in self.routers:
                    ins[x, y][port] = shown[there][1][back]       # the neighbour's output
                    readys[x, y][port] = shown[there][0][back]    # the neighbour's input ready
        injected, ejected = [False] * p.n_tiles, [False] * p.n_tiles
        for (x, y), r in self.routers.items():
            if r.idle() and all(f is None for f in ins[x, y]):
                continue                # nothing to take, hold or send: its state stays
            took, left = r.step(ins[x, y], readys[x, y])
            t = y * p.cols + x
            injected[t], ejected[t] = took[Port.LOCAL], left[Port.LOCAL]
        return injected, ejected
