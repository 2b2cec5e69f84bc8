"""The tile mesh: routers with dimension-ordered (XY) routing and multicast, and the mesh of them.

Twin: :mod:`snnc.sim.mesh` (:class:`~snnc.sim.mesh.RouterModel`, :class:`~snnc.sim.mesh.MeshModel`),
built from the same :class:`~snnc.hw.params.MeshParams`; docs/architecture.md, "The mesh", is the
contract both follow cycle for cycle.

A flit is ``{dst, payload}``: ``dst`` has one bit per tile. A router splits it by region: the
tiles east of its column leave east, those west leave west, those of its own column leave south
or north, and its own tile's bit leaves on the local port. Each branch carries only its
region's bits, so a flit meant for several tiles is sent once per branch of its XY tree, never
once per destination.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .params import MeshParams, Port

__all__ = ["flit_layout", "Router", "Mesh"]

N_PORTS = len(Port)


def flit_layout(p: MeshParams) -> data.StructLayout:
    return data.StructLayout({"dst": p.n_tiles, "payload": p.payload_bits})


class Router(wiring.Component):
    """One router at ``(x, y)``: five input streams (``i[port]``) and five output streams
    (``o[port]``), indexed by :class:`~snnc.hw.params.Port`.

    - Each input has a FIFO of ``p.depth`` flits (``amaranth.lib.fifo.SyncFIFO``): it is ready
      while not full, and a flit written in one cycle is at its head the next.
    - The head flit of an input asks for every output whose region meets its ``dst``, less the
      outputs it has already been sent to (``sent``).
    - Each output has one register. It takes a flit in a cycle when it is empty or its flit
      leaves in that cycle, from the requesting input that comes first in round-robin order
      starting at the output's pointer; the pointer then moves to the input after the granted
      one. The flit it takes carries ``dst`` cut to the output's region.
    - An input pops its head in the cycle in which its last branch is granted, and ``sent``
      clears; otherwise ``sent`` collects the branches granted so far.
    """

    def __init__(self, params: MeshParams, x: int, y: int):
        if not isinstance(params, MeshParams):
            raise TypeError(f"expected MeshParams, not {params!r}")
        if not (0 <= x < params.cols and 0 <= y < params.rows):
            raise ValueError(f"router ({x}, {y}) is outside a {params.cols} x {params.rows} mesh")
        self.params, self.x, self.y = params, x, y
        flit = stream.Signature(flit_layout(params))
        super().__init__({"i": In(flit).array(N_PORTS), "o": Out(flit).array(N_PORTS)})

    def elaborate(self, platform):
        m = Module()
        p = self.params
        layout = flit_layout(p)
        region = [p.region(self.x, self.y, port) for port in Port]
        heads, ready, need, sent = [], [], [], []
        for i in range(N_PORTS):
            fifo = m.submodules[f"fifo{i}"] = SyncFIFO(width=layout.size, depth=p.depth)
            m.d.comb += [fifo.w_en.eq(self.i[i].valid), fifo.w_data.eq(self.i[i].payload),
                         self.i[i].ready.eq(fifo.w_rdy)]
            head = data.View(layout, fifo.r_data)
            nd = Signal(N_PORTS, name=f"need{i}")
            m.d.comb += nd.eq(sum(((head.dst & region[o]) != 0) << o for o in range(N_PORTS)))
            heads.append((fifo, head))
            ready.append(fifo.r_rdy)
            need.append(nd)
            sent.append(Signal(N_PORTS, name=f"sent{i}"))
        # requests: req[o][i]
        req = [[Signal(name=f"req{i}_{o}") for i in range(N_PORTS)] for o in range(N_PORTS)]
        for o in range(N_PORTS):
            for i in range(N_PORTS):
                m.d.comb += req[o][i].eq(ready[i] & need[i][o] & ~sent[i][o])
        granted = [Signal(N_PORTS, name=f"granted{i}") for i in range(N_PORTS)]
        grants = [[Signal(name=f"grant{i}_{o}") for i in range(N_PORTS)] for o in range(N_PORTS)]
        for o in range(N_PORTS):
            valid = Signal(name=f"o_valid{o}")
            reg = Signal(layout, name=f"o_flit{o}")
            ptr = Signal(range(N_PORTS), name=f"rr{o}")
            m.d.comb += [self.o[o].valid.eq(valid), self.o[o].payload.eq(reg)]
            free = ~valid | self.o[o].ready
            with m.If(self.o[o].ready):
                m.d.sync += valid.eq(0)
            # Round-robin grant as plain expressions (continuous assignments in the Verilog,
            # which every simulator evaluates from time 0): input i wins when it asks and no
            # input before it, in the order starting at the pointer, asks.
            for i in range(N_PORTS):
                wins = 0
                for start in range(N_PORTS):
                    order = [(start + k) % N_PORTS for k in range(N_PORTS)]
                    before = order[:order.index(i)]
                    quiet = ~Cat(req[o][j] for j in before).any() if before else 1
                    wins = wins | ((ptr == start) & quiet)
                m.d.comb += grants[o][i].eq(free & req[o][i] & wins)
            for i in range(N_PORTS):
                with m.If(grants[o][i]):
                    m.d.sync += [valid.eq(1), reg.dst.eq(heads[i][1].dst & region[o]),
                                 reg.payload.eq(heads[i][1].payload),
                                 ptr.eq((i + 1) % N_PORTS)]
        for i in range(N_PORTS):
            fifo = heads[i][0]
            m.d.comb += granted[i].eq(sum(grants[o][i] << o for o in range(N_PORTS)))
            done = ready[i] & ((sent[i] | granted[i]) == need[i])
            m.d.comb += fifo.r_en.eq(done)
            with m.If(done):
                m.d.sync += sent[i].eq(0)
            with m.Else():
                m.d.sync += sent[i].eq(sent[i] | granted[i])
        return m


class Mesh(wiring.Component):
    """``cols`` x ``rows`` routers, each joined to its neighbours; ``inject[t]`` is tile ``t``'s
    stream into its router's local input and ``eject[t]`` the stream out of its local output.
    The ports at the mesh's edge are unused: XY routing never sends a flit there."""

    def __init__(self, params: MeshParams):
        if not isinstance(params, MeshParams):
            raise TypeError(f"expected MeshParams, not {params!r}")
        self.params = params
        flit = stream.Signature(flit_layout(params))
        super().__init__({"inject": In(flit).array(params.n_tiles),
                          "eject": Out(flit).array(params.n_tiles)})

    def elaborate(self, platform):
        m = Module()
        p = self.params
        r = {}
        for t in range(p.n_tiles):
            x, y = p.position(t)
            r[x, y] = m.submodules[f"router_{x}_{y}"] = Router(p, x, y)
            wiring.connect(m, wiring.flipped(self.inject[t]), r[x, y].i[Port.LOCAL])
            wiring.connect(m, r[x, y].o[Port.LOCAL], wiring.flipped(self.eject[t]))
        links = []
        for (x, y), router in r.items():
            if (x + 1, y) in r:
                links += [(router, Port.EAST, r[x + 1, y], Port.WEST),
                          (r[x + 1, y], Port.WEST, router, Port.EAST)]
            if (x, y + 1) in r:
                links += [(router, Port.SOUTH, r[x, y + 1], Port.NORTH),
                          (r[x, y + 1], Port.NORTH, router, Port.SOUTH)]
        for a, pa, b, pb in links:
            wiring.connect(m, a.o[pa], b.i[pb])
        for (x, y), router in r.items():
            for port, there in ((Port.EAST, (x + 1, y)), (Port.WEST, (x - 1, y)),
                                (Port.SOUTH, (x, y + 1)), (Port.NORTH, (x, y - 1))):
                if there not in r:
                    m.d.comb += [router.i[port].valid.eq(0), router.o[port].ready.eq(0)]
        return m
