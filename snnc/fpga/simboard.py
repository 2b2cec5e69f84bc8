"""A simulated board: :class:`snnc.fpga.top.HostTop` in Amaranth's simulator behind a transport.

:class:`SimBoard` has the transport interface of :class:`snnc.fpga.host.BoardClient`
(``write(bytes)``, ``read(n, timeout)``). Bytes written are sent bit by bit on the gateware's
``rx`` pin at the baud rate; the ``tx`` pin is sampled in the middle of each bit and decoded
(:mod:`snnc.sim.uart`). Time is simulated time: ``read`` advances the simulation until ``n``
bytes have arrived or ``timeout`` simulated seconds have passed, so timeouts are deterministic.

Faults can be injected on the way to the board (:meth:`SimBoard.flip` flips one bit of a future
byte, :meth:`SimBoard.drop` removes one) and on the way back (:meth:`SimBoard.flip_answer`,
:meth:`SimBoard.drop_answer`); :meth:`SimBoard.reset` pulses the synchronous reset.
"""

from __future__ import annotations

from collections import deque

from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from ..hw.params import CoreParams
from ..sim.uart import frame_bits
from .top import HostTop

__all__ = ["SimBoard"]


class SimBoard:
    """HostTop built from ``params`` with a clock of ``clk_hz`` and a line at ``baud`` (and a
    built-in ``network``, see :class:`HostTop`)."""

    def __init__(self, params: CoreParams, *, baud: int = 1_000_000, clk_hz: int | None = None,
                 max_tokens: int | None = None, network=None):
        clk_hz = 8 * baud if clk_hz is None else clk_hz
        self.top = top = HostTop(params, clk_hz=clk_hz, baud=baud, max_tokens=max_tokens,
                                 network=network)
        self.period = 1 / clk_hz
        self.bit_time = top.divisor * self.period
        self.to_board = deque()          # line levels still to send, one per bit time
        self.from_board = bytearray()
        self.framing_errors = 0          # frames from the board with a low stop bit
        self.sent = bytearray()          # bytes as they went on the line (after faults)
        self._faults = {}                # byte offset from now -> ("flip", bit) / ("drop",)
        self._offset = 0
        self._answer_faults = {}         # byte number -> bit to flip, or None to drop
        self._answered = 0               # bytes the board has sent so far
        self._reset_cycles = 0           # clock cycles of reset still to drive
        m = Module()
        m.domains.sync = self._domain = ClockDomain("sync")   # a reset the testbench can drive
        m.submodules.top = top
        self.sim = Simulator(m)
        self.sim.add_clock(self.period)
        self.sim.add_testbench(self._drive_rx, background=True)
        self.sim.add_testbench(self._watch_tx, background=True)
        self.sim.add_testbench(self._drive_rst, background=True)
        self.now = 0.0
        self._ran_to = 0.0               # the last time the simulation was run to

    # Fault injection ---------------------------------------------------------------------------
    def flip(self, byte: int, bit: int) -> None:
        """Flip ``bit`` of the ``byte``-th byte written from now on (0 = the next one)."""
        self._faults[self._offset + byte] = ("flip", bit)

    def drop(self, byte: int) -> None:
        """Do not send the ``byte``-th byte written from now on."""
        self._faults[self._offset + byte] = ("drop",)

    def drop_answer(self, byte: int) -> None:
        """Lose the ``byte``-th byte the board sends from now on (0 = the next one)."""
        self._answer_faults[self._answered + byte] = None

    def flip_answer(self, byte: int, bit: int) -> None:
        """Flip ``bit`` of the ``byte``-th byte the board sends from now on."""
        self._answer_faults[self._answered + byte] = bit

    def reset(self, cycles: int = 2) -> None:
        """Hold the synchronous reset for ``cycles`` clock cycles, starting now (memories keep
        their contents; registers return to their initial values)."""
        self._reset_cycles = int(cycles)
        while self._reset_cycles:
            self._run_to(self.now + self.bit_time)

    def _run_to(self, t: float) -> None:
        """Simulate until ``t`` seconds. The simulator stops at the first event at or after a
        deadline (at most half a clock period later) and refuses a deadline behind it, which a
        float sum a hair below the last one would be: steps shorter than a period wait."""
        self.now = t
        if t >= self._ran_to + self.period:
            self.sim.run_until(t)
            self._ran_to = t

    # Transport ---------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        for b in bytes(data):
            fault = self._faults.pop(self._offset, None)
            self._offset += 1
            if fault and fault[0] == "drop":
                continue
            if fault:
                b ^= 1 << fault[1]
            self.sent.append(b)
            self.to_board.extend(frame_bits(b))

    def read(self, n: int, timeout: float) -> bytes:
        deadline = self.now + timeout
        step = 10 * self.bit_time
        while len(self.from_board) < n and self.now < deadline:
            self._run_to(min(self.now + step, deadline))
        out = bytes(self.from_board[:n])
        del self.from_board[:n]
        return out

    def send_bits(self, levels) -> None:
        """Put raw line levels (one per bit time) on ``rx``, e.g. a frame without its stop bit."""
        self.to_board.extend(levels)

    # Testbenches -------------------------------------------------------------------------------
    async def _drive_rx(self, ctx):
        rx = self.top.rx
        ctx.set(rx, 1)
        await ctx.tick()
        await ctx.delay(self.period / 4)         # stay clear of the clock edges
        while True:
            ctx.set(rx, self.to_board.popleft() if self.to_board else 1)
            await ctx.delay(self.bit_time)

    async def _drive_rst(self, ctx):
        # Looks once per bit time (waking every cycle would slow every simulation down).
        while True:
            await ctx.delay(self.bit_time)
            if self._reset_cycles:
                ctx.set(self._domain.rst, 1)
                await ctx.delay(self._reset_cycles * self.period)   # as many clock edges
                ctx.set(self._domain.rst, 0)
                self._reset_cycles = 0

    async def _watch_tx(self, ctx):
        tx = self.top.tx
        while True:
            await ctx.negedge(tx)
            await ctx.delay(self.bit_time / 2)
            bits = []
            for _ in range(10):
                bits.append(ctx.get(tx))
                if len(bits) < 10:
                    await ctx.delay(self.bit_time)
            byte = sum(b << i for i, b in enumerate(bits[1:9]))
            if bits[0] != 0 or bits[9] != 1:
                self.framing_errors += 1
            elif self._answered not in self._answer_faults:
                self.from_board.append(byte)
            elif self._answer_faults[self._answered] is not None:
                self.from_board.append(byte ^ (1 << self._answer_faults[self._answered]))
            self._answered += 1
