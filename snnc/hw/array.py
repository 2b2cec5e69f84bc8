"""The tile array: tile-mode cores on a mesh, with their inboxes and the host port.

Twin: :class:`snnc.sim.array.ArrayModel`, built from the same :class:`~snnc.hw.params.ArrayParams`
and :class:`~snnc.hw.mapping.ArrayImage`; docs/architecture.md, "Tiles", is the contract both
follow cycle for cycle.

Per tile:

- the core (:class:`snnc.hw.core.Core` with ``CoreParams.tile``), its network built in;
- the *sender*: the core's output event becomes a flit. A spike of population ``k`` goes to the
  tiles that store entries of its part's sources (the tile's ``dst[k]``) with its index within
  the whole population (the part's first neuron added); an end of layer (EOL) goes to every
  tile; the end of a timestep (EOT) does not enter the mesh: it counts at the host port;
- the *inboxes*: two ``SyncFIFOBuffered`` of ``inbox_depth`` tokens, for populations of even and
  of odd index. Every flit the router hands over is taken in its cycle. A spike or input
  becomes a token; an EOL only counts, per inbox, and the one that completes a population (1
  for the input, one per tile for the others) becomes the token with ``eot``. The core reads the
  inbox of the population it is walking (``phase_pop``).

The host port joins tile 0's router (the tile's own flits first). It forwards the input tokens
of ``inp`` as flits of population 0 (inputs to ``dst[0]``, the end of the input to every tile);
after the end of a timestep's input it waits until every tile has sent its EOT (the timestep
barrier), and it forwards only while a tile is busy.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .core import Core, input_layout
from .mapping import ArrayImage, config_writes
from .mesh import Mesh
from .params import ArrayParams, bits_for

__all__ = ["TileArray", "payload_layout", "host_layout", "monitor_layout", "table_writes"]


def payload_layout(p: ArrayParams) -> data.StructLayout:
    """A flit's payload: a spike or input (``value``) of neuron ``index`` of population ``pop``,
    or an end of layer (``eol``)."""
    return data.StructLayout({"pop": p.tile.pop_bits, "index": p.index_bits,
                              "value": signed(p.tile.input_bits), "eol": 1})


def host_layout(p: ArrayParams) -> data.StructLayout:
    """The host's input token: input ``index`` sends ``value``; ``eot`` ends the timestep's."""
    return data.StructLayout({"index": p.index_bits, "value": signed(p.tile.input_bits), "eot": 1})


def monitor_layout(p: ArrayParams) -> data.StructLayout:
    """What a tile's core sends, as its output stream hands it over (``valid``): a spike
    (``index`` within the whole population), an EOL (``eot``, ``pop`` > 0) or an EOT (``eot``,
    ``pop`` 0)."""
    return data.StructLayout({"valid": 1, "pop": p.tile.pop_bits, "index": p.index_bits,
                              "strength": p.tile.strength_bits, "eot": 1})


class TileArray(wiring.Component):
    """``params.n_tiles`` tiles; with ``image`` (and its ``timesteps``) the network is built in
    (memories, registers and routing tables start with it), otherwise everything starts at zero
    and is loaded through the configuration and table ports.

    Ports
    -----
    inp : stream of :func:`host_layout`
        The input tokens of every timestep, as a single core takes them.
    start
        Pulse while idle: every tile clears and runs ``timesteps`` timesteps.
    busy
        High while any tile is busy.
    mon : per tile, :func:`monitor_layout`
        The tile's output events, in the cycle they leave its core.
    cfg_tiles, cfg_we, cfg_sel, cfg_addr, cfg_data
        Configuration writes into the tiles whose bit is set in ``cfg_tiles`` (while idle).
    tbl_we, tbl_sel, tbl_addr, tbl_data
        Routing-table writes (while idle, :func:`table_writes`): in the tiles of
        ``cfg_tiles``, ``sel`` 0 sets the part offset of population ``addr``, ``sel`` 1 the
        destination set of its spikes (tile 0's entry for population 0: the host's inputs).
    rb_tile, rb_sel, rb_addr, rb_data
        Readback of tile ``rb_tile`` (its core's readback; ``rb_data`` the cycle after).
    overflow
        Sticky: an inbox was full when a flit arrived (never, with inboxes sized as the
        compiler sizes them; tested).
    """

    def __init__(self, params: ArrayParams, image: ArrayImage | None = None,
                 timesteps: int | None = None):
        if not isinstance(params, ArrayParams):
            raise TypeError(f"expected ArrayParams, not {params!r}")
        if image is not None and image.n_tiles != params.n_tiles:
            raise ValueError(f"the image is for {image.n_tiles} tiles, the array has "
                             f"{params.n_tiles}")
        self.params, self.image = params, image
        self.networks = [None] * params.n_tiles if image is None else \
            [config_writes(img, params.tile, timesteps) for img in image.tiles]
        tp = params.tile
        probe = Core(tp)
        probe._MustUse__silence = True
        cfg = {name: In(getattr(probe, name).shape()) for name in
               ("cfg_sel", "cfg_addr", "cfg_data")}
        super().__init__({
            "inp": In(stream.Signature(host_layout(params))),
            "start": In(1), "busy": Out(1), "overflow": Out(1),
            "mon": Out(monitor_layout(params)).array(params.n_tiles),
            "cfg_tiles": In(params.n_tiles), "cfg_we": In(1), **cfg,
            "tbl_we": In(1), "tbl_sel": In(1), "tbl_addr": In(tp.pop_bits),
            "tbl_data": In(max(params.index_bits, params.n_tiles)),
            "rb_tile": In(bits_for(max(1, params.n_tiles - 1))), "rb_sel": In(1),
            "rb_addr": In(probe.rb_addr.shape()), "rb_data": Out(probe.rb_data.shape()),
        })

    def table_writes(self, image: ArrayImage) -> list[tuple[int, int, int, int]]:
        """``(tiles, sel, addr, data)`` table writes for ``image``: each tile's part offsets
        (``sel`` 0) and the destination sets (``sel`` 1, all tiles)."""
        return table_writes(self.params, image)

    def elaborate(self, platform):
        m = Module()
        p, img = self.params, self.image
        tp = p.tile
        n = p.n_tiles
        all_tiles = (1 << n) - 1
        m.submodules.mesh = mesh = Mesh(p.mesh)
        playout = payload_layout(p)
        tok = input_layout(tp)
        cores = []
        tw = self.tbl_we
        eot_fire = Signal(n)
        overflow = Signal()
        busy = Signal()
        m.d.comb += [self.busy.eq(busy), self.overflow.eq(overflow)]
        for t in range(n):
            core = m.submodules[f"tile{t}"] = Core(tp, network=self.networks[t])
            cores.append(core)
            m.d.comb += [core.start.eq(self.start), core.cfg_we.eq(self.cfg_we & self.cfg_tiles[t]),
                         core.cfg_sel.eq(self.cfg_sel), core.cfg_addr.eq(self.cfg_addr),
                         core.cfg_data.eq(self.cfg_data), core.rb_sel.eq(self.rb_sel),
                         core.rb_addr.eq(self.rb_addr)]
            # Sender: the core's event as a flit (an EOT goes to the host port instead).
            o = core.out
            offset = Array(Signal(p.index_bits, name=f"offset{t}_{k}",
                                  init=img.parts[t][k][0] if img is not None and k < img.n_pops else 0)
                           for k in range(tp.max_pops))
            with m.If(tw & (self.tbl_sel == 0) & self.cfg_tiles[t]):
                m.d.sync += offset[self.tbl_addr].eq(self.tbl_data)
            dst = Array(Signal(n, name=f"dst{t}_{k}",
                               init=img.dst[t][k] if img is not None and k < img.n_pops else 0)
                        for k in range(tp.max_pops))
            with m.If(tw & (self.tbl_sel == 1) & self.cfg_tiles[t]):
                m.d.sync += dst[self.tbl_addr].eq(self.tbl_data)
            is_eot = o.payload.eot & (o.payload.pop == 0)
            flit = Signal(mesh.inject[t].payload.shape(), name=f"flit{t}")
            pl = playout(flit.payload)
            m.d.comb += [flit.dst.eq(Mux(o.payload.eot, all_tiles, dst[o.payload.pop])),
                         pl.pop.eq(o.payload.pop), pl.eol.eq(o.payload.eot),
                         pl.index.eq(Mux(o.payload.eot, 0, offset[o.payload.pop] + o.payload.index)),
                         pl.value.eq(Mux(o.payload.eot, 0, o.payload.strength))]
            send = o.valid & ~is_eot
            inj = mesh.inject[t]
            m.d.comb += [o.ready.eq(is_eot | inj.ready), eot_fire[t].eq(o.valid & is_eot)]
            mon = self.mon[t]
            m.d.comb += [mon.valid.eq(o.valid & o.ready), mon.pop.eq(o.payload.pop),
                         mon.index.eq(pl.index), mon.strength.eq(o.payload.strength),
                         mon.eot.eq(o.payload.eot)]
            if t == 0:
                host_flit, host_send = self._host_port(m, mesh, send, eot_fire, busy, dst[0])
                m.d.comb += [inj.valid.eq(send | host_send),
                             inj.payload.eq(Mux(send, flit.as_value(), host_flit.as_value()))]
            else:
                m.d.comb += [inj.valid.eq(send), inj.payload.eq(flit)]
            # Inboxes: population parity 0 and 1.
            ej = mesh.eject[t]
            epl = playout(ej.payload.payload)
            m.d.comb += ej.ready.eq(1)
            par = epl.pop[0]
            count = [Signal(bits_for(n), name=f"eol{t}_{i}") for i in range(2)]
            expect = Mux(epl.pop == 0, 1, n)
            have = Mux(par, count[1], count[0])
            complete = have + 1 == expect
            fifos = []
            for i in range(2):
                fifo = m.submodules[f"inbox{t}_{i}"] = SyncFIFOBuffered(width=tok.size,
                                                                       depth=p.inbox_depth)
                fifos.append(fifo)
                wt = tok(fifo.w_data)
                m.d.comb += [wt.index.eq(epl.index), wt.value.eq(epl.value), wt.eot.eq(epl.eol),
                             fifo.w_en.eq(ej.valid & (par == i) & (~epl.eol | complete))]
                with m.If(ej.valid & (par == i) & epl.eol):
                    m.d.sync += count[i].eq(Mux(complete, 0, have + 1))
                with m.If(fifo.w_en & ~fifo.w_rdy):
                    m.d.sync += overflow.eq(1)
                with m.If(self.start):
                    m.d.sync += count[i].eq(0)
            sel = core.phase_pop[0]
            m.d.comb += [core.inp.valid.eq(Mux(sel, fifos[1].r_rdy, fifos[0].r_rdy)),
                         core.inp.payload.eq(Mux(sel, fifos[1].r_data, fifos[0].r_data)),
                         fifos[0].r_en.eq(core.inp.ready & ~sel),
                         fifos[1].r_en.eq(core.inp.ready & sel)]
        m.d.comb += busy.eq(Cat(c.busy for c in cores).any())
        m.d.comb += self.rb_data.eq(Array(c.rb_data for c in cores)[self.rb_tile])
        return m

    def _host_port(self, m, mesh, tile_send, eot_fire, busy, dst0):
        """Tile 0's router input for the host: returns the host's flit and whether it sends."""
        p = self.params
        n = p.n_tiles
        playout = payload_layout(p)
        released = Signal()
        eots = Signal(bits_for(n))
        flit = Signal(mesh.inject[0].payload.shape(), name="host_flit")
        pl = playout(flit.payload)
        inp = self.inp
        m.d.comb += [flit.dst.eq(Mux(inp.payload.eot, (1 << n) - 1, dst0)),
                     pl.pop.eq(0), pl.index.eq(inp.payload.index), pl.value.eq(inp.payload.value),
                     pl.eol.eq(inp.payload.eot)]
        go = released & busy & ~tile_send
        m.d.comb += inp.ready.eq(go & mesh.inject[0].ready)
        send = go & inp.valid
        with m.If(inp.valid & inp.ready & inp.payload.eot):
            m.d.sync += released.eq(0)
        total = eots + sum(eot_fire[t] for t in range(n))
        with m.If(total == n):
            m.d.sync += [eots.eq(0), released.eq(1)]
        with m.Else():
            m.d.sync += eots.eq(total)
        with m.If(self.start):
            m.d.sync += [eots.eq(0), released.eq(1)]
        return flit, send


def table_writes(params: ArrayParams, image: ArrayImage) -> list[tuple[int, int, int, int]]:
    """``(tiles, sel, addr, data)``: the table writes that load ``image``'s routing into a
    :class:`TileArray` (``tbl_*`` ports, ``cfg_tiles`` = ``tiles``): per tile and population,
    its part's offset (``sel`` 0) and the destination set of its spikes (``sel`` 1)."""
    return [(1 << t, sel, k, image.parts[t][k][0] if sel == 0 else image.dst[t][k])
            for t in range(image.n_tiles) for sel in (0, 1) for k in range(image.n_pops)]
