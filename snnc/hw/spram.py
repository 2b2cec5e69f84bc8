"""A core memory on the iCE40UP5K's single-port SPRAM (``SB_SPRAM256KA``, 16,384 x 16 bits).

The core's configuration-loaded memories (``ptr``, ``tgt``, ``wgt``, ``bias``) are written only
while the core is idle and read only while it runs, so one port serves both: the address is the
write address during a write and the read address otherwise. :class:`SPRAMMemory` has the same
port signals as an :class:`amaranth.lib.memory.Memory` with one write port and one synchronous
read port (``addr``, ``data``, ``en``; read data the cycle after, held while ``en`` is low), so
the core uses either without a change in timing. A write and a read in the same cycle is not
supported (the core never does it: writes happen only while idle).

SPRAM has no initial contents, and the Amaranth simulator cannot run the primitive: the core
uses it only when asked (``Core(params, spram=...)``, which ``snnc build`` does for the UP5K when
the block RAM would not hold the network). Its behaviour is checked on yosys's own simulation
model of ``SB_SPRAM256KA`` (``tests/hw/test_spram.py``: gate-level netlists under Icarus, bit for
bit against the reference).
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, ClockSignal, Const, Elaboratable, Instance, Module, Mux, Shape, Signal

__all__ = ["SPRAM_DEPTH", "SPRAM_WIDTH", "SPRAMMemory", "spram_blocks"]

SPRAM_DEPTH = 16384
SPRAM_WIDTH = 16


def spram_blocks(depth: int, width: int) -> int:
    """SB_SPRAM256KA blocks a ``depth`` x ``width`` memory takes."""
    return -(-width // SPRAM_WIDTH) * -(-depth // SPRAM_DEPTH)


class SPRAMMemory(Elaboratable):
    """``depth`` words of ``shape`` on SPRAM blocks, with ``write_port()`` and ``read_port()``."""

    def __init__(self, *, shape, depth: int, name: str = "spram"):
        self.shape, self.depth, self.name = Shape.cast(shape), int(depth), name
        abits = max(1, (self.depth - 1).bit_length())
        self._w = SimpleNamespace(addr=Signal(abits, name=f"{name}_waddr"),
                                  data=Signal(self.shape, name=f"{name}_wdata"),
                                  en=Signal(name=f"{name}_we"))
        self._r = SimpleNamespace(addr=Signal(abits, name=f"{name}_raddr"),
                                  data=Signal(self.shape, name=f"{name}_rdata"),
                                  en=Signal(name=f"{name}_re"))

    def write_port(self):
        return self._w

    def read_port(self):
        return self._r

    def elaborate(self, platform):
        m = Module()
        w, r = self._w, self._r
        width = self.shape.width
        cols = -(-width // SPRAM_WIDTH)
        banks = -(-self.depth // SPRAM_DEPTH)
        abits = len(w.addr)
        addr = Signal(abits, name=f"{self.name}_addr")
        m.d.comb += addr.eq(Mux(w.en, w.addr, r.addr))
        wide = Signal(cols * SPRAM_WIDTH)
        m.d.comb += wide.eq(w.data.as_unsigned())
        bank = addr[14:] if abits > 14 else Const(0, 1)
        bank_q = Signal.like(bank, name=f"{self.name}_bank")   # the bank the read came from
        with m.If(r.en & ~w.en):
            m.d.sync += bank_q.eq(bank)
        outs = []
        for b in range(banks):
            here = bank == b
            row = []
            for c in range(cols):
                out = Signal(SPRAM_WIDTH, name=f"{self.name}_b{b}c{c}")
                m.submodules[f"{self.name}_b{b}c{c}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=Cat(addr, Const(0, 14))[:14], i_DATAIN=wide[c * SPRAM_WIDTH:(c + 1) * SPRAM_WIDTH],
                    i_MASKWREN=Const(0b1111, 4), i_WREN=w.en & here,
                    i_CHIPSELECT=(w.en | r.en) & here, i_CLOCK=ClockSignal(),
                    i_STANDBY=Const(0, 1), i_SLEEP=Const(0, 1), i_POWEROFF=Const(1, 1),
                    o_DATAOUT=out)
                row.append(out)
            outs.append(Cat(*row))
        data = outs[0]
        for b in range(1, banks):
            data = Mux(bank_q == b, outs[b], data)
        m.d.comb += r.data.eq(data[:width])
        return m
