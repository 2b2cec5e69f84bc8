"""A verification harness around the generated core, so RTL runs need no Python per clock cycle.

The harness instantiates the core's Verilog module (``snnc_core``, e.g. a bundle's ``core.v``)
as a black box and adds, in hardware:

- a token memory holding one timestep's input events (direct encoding repeats them every
  timestep), replayed ``timesteps`` times, each time followed by an end-of-timestep token;
- pseudo-random idle cycles on the input stream and backpressure on the output stream from a
  16-bit LFSR (thresholds out of 256, seedable), so stalls are exercised at full simulation
  speed; ``valid`` stays asserted with a stable payload until the core accepts (stream rules);
- an event memory capturing every accepted output event (spikes and end-of-timestep tokens);
- ``done``, a wall-clock cycle counter and an overflow flag.

cocotb only loads memories, pulses ``go``, waits for ``done`` and reads results back. The
harness is verification scaffolding, not part of the product core.
"""

from __future__ import annotations

from amaranth.back import verilog
from amaranth.hdl import Cat, ClockSignal, Instance, Module, ResetSignal, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from ..hw.core import input_layout, output_layout
from ..hw.params import CoreParams, bits_for

__all__ = ["Harness", "harness_verilog", "HARNESS_TOP", "replay_tokens"]

HARNESS_TOP = "snnc_tb"


class Harness(wiring.Component):
    """Test harness for a core built from ``params``; holds up to ``max_events`` output events."""

    def __init__(self, params: CoreParams, *, max_events: int = 1 << 14):
        if not isinstance(params, CoreParams):
            raise TypeError(f"expected CoreParams, not {params!r}")
        if not isinstance(max_events, int) or max_events < 2:
            raise ValueError(f"max_events must be an int >= 2, not {max_events!r}")
        self.params = p = params
        self.max_events = max_events
        self.in_layout = input_layout(p)
        self.out_width = output_layout(p).size
        tok_bits = bits_for(p.max_sources)
        super().__init__({
            "cfg_we": In(1), "cfg_sel": In(3), "cfg_addr": In(p.cfg_addr_bits),
            "cfg_data": In(p.cfg_data_bits),
            "rb_sel": In(1), "rb_addr": In(max(p.neuron_addr_bits, 6)), "rb_data": Out(p.rb_bits),
            "tok_we": In(1), "tok_addr": In(tok_bits), "tok_data": In(self.in_layout.size),
            "tok_count": In(tok_bits + 1), "timesteps": In(16),
            "idle_thresh": In(8), "stall_thresh": In(8), "seed": In(16),
            "go": In(1), "done": Out(1), "overflow": Out(1),
            "ev_count": Out(bits_for(max_events)), "ev_addr": In(bits_for(max_events - 1)),
            "ev_data": Out(self.out_width), "wall_cycles": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        m.submodules.tok_mem = tok_mem = memory.Memory(shape=self.in_layout.size,
                                                       depth=p.max_sources + 1, init=[])
        m.submodules.ev_mem = ev_mem = memory.Memory(shape=self.out_width, depth=self.max_events,
                                                     init=[])
        tok_w, tok_r = tok_mem.write_port(), tok_mem.read_port(domain="comb")
        ev_w, ev_r = ev_mem.write_port(), ev_mem.read_port(domain="comb")

        inp_valid, inp_ready = Signal(), Signal()
        inp_payload = Signal(self.in_layout)
        out_valid, out_ready = Signal(), Signal()
        out_payload = Signal(self.out_width)
        busy, start = Signal(), Signal()
        m.submodules.core = Instance(
            "snnc_core",
            i_clk=ClockSignal(), i_rst=ResetSignal(),
            i_inp__valid=inp_valid, o_inp__ready=inp_ready, i_inp__payload=inp_payload,
            o_out__valid=out_valid, i_out__ready=out_ready, o_out__payload=out_payload,
            i_cfg_we=self.cfg_we, i_cfg_sel=self.cfg_sel, i_cfg_addr=self.cfg_addr,
            i_cfg_data=self.cfg_data, i_start=start, o_busy=busy,
            i_rb_sel=self.rb_sel, i_rb_addr=self.rb_addr, o_rb_data=self.rb_data)

        m.d.comb += [tok_w.addr.eq(self.tok_addr), tok_w.data.eq(self.tok_data),
                     tok_w.en.eq(self.tok_we), ev_r.addr.eq(self.ev_addr),
                     self.ev_data.eq(ev_r.data)]

        lfsr = Signal(16, init=1)
        m.d.sync += lfsr.eq(_lfsr_step(lfsr))
        idle_now = lfsr[:8] < self.idle_thresh
        stall_now = lfsr[8:] < self.stall_thresh

        tok_i = Signal(len(self.tok_count))
        t = Signal(16)
        eots = Signal(16)
        holding = Signal()
        running = Signal()
        done = Signal()
        m.d.comb += self.done.eq(done)

        replay_tokens(m, tok_r=tok_r, tok_i=tok_i, count=self.tok_count, t=t,
                      timesteps=self.timesteps, holding=holding, running=running,
                      idle_now=idle_now, valid=inp_valid, ready=inp_ready, payload=inp_payload)

        # Output: random backpressure, capture every accepted event.
        m.d.comb += [out_ready.eq(running & ~stall_now),
                     ev_w.addr.eq(self.ev_count), ev_w.data.eq(out_payload)]
        with m.If(out_valid & out_ready):
            with m.If(self.ev_count == self.max_events):
                m.d.sync += self.overflow.eq(1)
            with m.Else():
                m.d.comb += ev_w.en.eq(1)
                m.d.sync += self.ev_count.eq(self.ev_count + 1)
            with m.If(out_payload[-1]):   # eot is the payload's last bit
                m.d.sync += eots.eq(eots + 1)

        with m.If(running):
            m.d.sync += self.wall_cycles.eq(self.wall_cycles + 1)
            with m.If((eots == self.timesteps) & ~busy & ~start):
                m.d.sync += [running.eq(0), done.eq(1)]
        with m.If(self.go):
            m.d.comb += start.eq(1)
            m.d.sync += [running.eq(1), done.eq(0), tok_i.eq(0), t.eq(0), eots.eq(0),
                         holding.eq(0), self.ev_count.eq(0), self.overflow.eq(0),
                         self.wall_cycles.eq(0), lfsr.eq(self.seed | 1)]
        return m


def replay_tokens(m, *, tok_r, tok_i, count, t, timesteps, holding, running, idle_now, valid,
                  ready, payload) -> None:
    """Input: present token ``tok_i`` of the token memory (or the end-of-timestep token after
    the last one) on a stream, ``timesteps`` times over; a gap when ``idle_now`` unless a token
    is already offered; hold it until accepted."""
    last = tok_i == count
    m.d.comb += tok_r.addr.eq(tok_i)
    with m.If(last):
        m.d.comb += payload.eot.eq(1)
    with m.Else():
        m.d.comb += payload.eq(tok_r.data)
    m.d.comb += valid.eq(running & (t < timesteps) & (holding | ~idle_now))
    with m.If(valid & ~ready):
        m.d.sync += holding.eq(1)
    with m.If(valid & ready):
        m.d.sync += holding.eq(0)
        with m.If(last):
            m.d.sync += [tok_i.eq(0), t.eq(t + 1)]
        with m.Else():
            m.d.sync += tok_i.eq(tok_i + 1)


def _lfsr_step(v):
    """One step of the 16-bit Fibonacci LFSR x^16 + x^14 + x^13 + x^11 + 1."""
    fb = v[15] ^ v[13] ^ v[12] ^ v[10]
    return Cat(fb, v[:15])


def harness_verilog(params: CoreParams, *, max_events: int = 1 << 14) -> str:
    """Verilog of the harness (top ``snnc_tb``); compile it together with the core's Verilog."""
    return verilog.convert(Harness(params, max_events=max_events), name=HARNESS_TOP)
