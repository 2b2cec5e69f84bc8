"""A verification harness around the generated tile array (``snnc_array``), so RTL runs need no
Python per clock cycle: the counterpart of :mod:`snnc.rtl.harness` for
:class:`snnc.hw.array.TileArray`.

In hardware: a token memory holding one timestep's input events, replayed ``timesteps`` times,
each time followed by the end-of-timestep token, with pseudo-random idle cycles from a 16-bit
LFSR; per tile, a memory capturing every event the tile's core hands over (``mon``) with the
cycle it happened in (the ``go`` cycle is cycle 0, as in the twin); ``done`` once every tile has
ended every timestep and the array is idle; a wall-clock counter and an overflow flag. cocotb
loads the tiles, pulses ``go``, waits for ``done`` and reads the results back.
"""

from __future__ import annotations

from amaranth.back import verilog
from amaranth.hdl import Array, ClockSignal, Instance, Module, ResetSignal, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from ..hw.array import TileArray, host_layout, monitor_layout
from ..hw.params import ArrayParams, bits_for
from .harness import _lfsr_step, replay_tokens

__all__ = ["ArrayHarness", "array_harness_verilog", "ARRAY_TOP", "ARRAY_DESIGN"]

ARRAY_TOP = "snnc_array_tb"
ARRAY_DESIGN = "snnc_array"


class ArrayHarness(wiring.Component):
    """Test harness for an array built from ``params``; each tile's capture memory holds up to
    ``max_events`` events."""

    def __init__(self, params: ArrayParams, *, max_events: int = 1 << 12):
        if not isinstance(params, ArrayParams):
            raise TypeError(f"expected ArrayParams, not {params!r}")
        self.params = p = params
        self.max_events = max_events
        probe = TileArray(p)
        probe._MustUse__silence = True
        self.probe = probe
        self.tok_layout = host_layout(p)
        self.mon_width = monitor_layout(p).size - 1          # without ``valid``
        n = p.n_tiles
        tok_bits = bits_for(1 << p.index_bits)
        ports = {name: In(getattr(probe, name).shape()) for name in (
            "cfg_tiles", "cfg_we", "cfg_sel", "cfg_addr", "cfg_data", "tbl_we", "tbl_sel",
            "tbl_addr", "tbl_data", "rb_tile", "rb_sel", "rb_addr")}
        super().__init__({
            **ports, "rb_data": Out(probe.rb_data.shape()),
            "tok_we": In(1), "tok_addr": In(tok_bits), "tok_data": In(self.tok_layout.size),
            "tok_count": In(tok_bits + 1), "timesteps": In(16), "idle_thresh": In(8),
            "seed": In(16), "go": In(1), "done": Out(1), "overflow": Out(1),
            "ev_tile": In(bits_for(max(1, n - 1))), "ev_count": Out(bits_for(max_events)),
            "ev_addr": In(bits_for(max_events - 1)), "ev_data": Out(32 + self.mon_width),
            "wall_cycles": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        n = p.n_tiles
        m.submodules.tok_mem = tok_mem = memory.Memory(shape=self.tok_layout.size,
                                                       depth=(1 << p.index_bits) + 1, init=[])
        tok_w, tok_r = tok_mem.write_port(), tok_mem.read_port(domain="comb")
        m.d.comb += [tok_w.addr.eq(self.tok_addr), tok_w.data.eq(self.tok_data),
                     tok_w.en.eq(self.tok_we)]

        inp_valid, inp_ready = Signal(), Signal()
        inp_payload = Signal(self.tok_layout)
        busy, start, arr_overflow = Signal(), Signal(), Signal()
        mons = [Signal(monitor_layout(p), name=f"mon{t}") for t in range(n)]
        conns = {f"i_{name}": getattr(self, name) for name in (
            "cfg_tiles", "cfg_we", "cfg_sel", "cfg_addr", "cfg_data", "tbl_we", "tbl_sel",
            "tbl_addr", "tbl_data", "rb_tile", "rb_sel", "rb_addr")}
        conns.update({f"o_mon__{t}": mons[t] for t in range(n)})
        m.submodules.array = Instance(
            ARRAY_DESIGN, i_clk=ClockSignal(), i_rst=ResetSignal(),
            i_inp__valid=inp_valid, o_inp__ready=inp_ready, i_inp__payload=inp_payload,
            i_start=start, o_busy=busy, o_overflow=arr_overflow, o_rb_data=self.rb_data, **conns)

        lfsr = Signal(16, init=1)
        m.d.sync += lfsr.eq(_lfsr_step(lfsr))
        idle_now = lfsr[:8] < self.idle_thresh
        tok_i = Signal(len(self.tok_count))
        t = Signal(16)
        holding = Signal()
        running = Signal()
        done = Signal()
        stamp = Signal(32)
        eots = Signal(16 + bits_for(n))
        m.d.comb += self.done.eq(done)
        replay_tokens(m, tok_r=tok_r, tok_i=tok_i, count=self.tok_count, t=t,
                      timesteps=self.timesteps, holding=holding, running=running,
                      idle_now=idle_now, valid=inp_valid, ready=inp_ready, payload=inp_payload)

        # Capture: one memory per tile, the cycle stamp above the event.
        counts, datas = [], []
        for k in range(n):
            mem = m.submodules[f"ev_mem{k}"] = memory.Memory(
                shape=32 + self.mon_width, depth=self.max_events, init=[])
            w, r = mem.write_port(), mem.read_port(domain="comb")
            cnt = Signal(bits_for(self.max_events), name=f"ev_count{k}")
            mon = mons[k]
            m.d.comb += [w.addr.eq(cnt), w.data.eq(stamp | (mon.as_value()[1:] << 32)),
                         r.addr.eq(self.ev_addr)]
            with m.If(mon.valid):
                with m.If(cnt == self.max_events):
                    m.d.sync += self.overflow.eq(1)
                with m.Else():
                    m.d.comb += w.en.eq(1)
                    m.d.sync += cnt.eq(cnt + 1)
            with m.If(self.go):
                m.d.sync += cnt.eq(0)
            counts.append(cnt)
            datas.append(r.data)
        m.d.comb += [self.ev_count.eq(Array(counts)[self.ev_tile]),
                     self.ev_data.eq(Array(datas)[self.ev_tile])]
        ended = sum(mons[k].valid & mons[k].eot & (mons[k].pop == 0) for k in range(n))
        with m.If(arr_overflow):
            m.d.sync += self.overflow.eq(1)

        m.d.sync += stamp.eq(stamp + 1)
        with m.If(running):
            m.d.sync += [self.wall_cycles.eq(self.wall_cycles + 1), eots.eq(eots + ended)]
            with m.If((eots == self.timesteps * n) & ~busy & ~start):
                m.d.sync += [running.eq(0), done.eq(1)]
        with m.If(self.go):
            m.d.comb += start.eq(1)
            m.d.sync += [running.eq(1), done.eq(0), tok_i.eq(0), t.eq(0), eots.eq(0),
                         holding.eq(0), self.overflow.eq(0), stamp.eq(1),
                         self.wall_cycles.eq(0), lfsr.eq(self.seed | 1)]
        return m


def array_harness_verilog(params: ArrayParams, *, max_events: int = 1 << 12) -> str:
    """Verilog of the harness (top ``snnc_array_tb``); compile it with the array's Verilog
    (module ``snnc_array``)."""
    return verilog.convert(ArrayHarness(params, max_events=max_events), name=ARRAY_TOP)
