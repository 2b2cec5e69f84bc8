"""8N1 UART transmitter and receiver with ``amaranth.lib.stream`` byte interfaces.

Twin model: :mod:`snnc.sim.uart` (the bits of a frame, and a sampling line decoder).

A frame is a start bit (0), eight data bits least significant first, and a stop bit (1); each
bit lasts ``divisor`` clock cycles (``divisor = clk_hz // baud``). The line idles high.
"""


from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["UARTTx", "UARTRx", "uart_divisor"]


def uart_divisor(clk_hz: int, baud: int) -> int:
    """Clock cycles per bit, ``clk_hz // baud``; at least 4 so the receiver can sample mid-bit."""
    for name, v in (("clk_hz", clk_hz), ("baud", baud)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, not {v!r}")
    divisor = clk_hz // baud
    if divisor < 4:
        raise ValueError(f"clk_hz {clk_hz} is too slow for {baud} baud: the UART needs at least "
                         f"4 clock cycles per bit, got {clk_hz / baud:.2f}")
    return divisor


class _UART(wiring.Component):
    """A UART side timed by ``divisor`` clock cycles per bit (at least 4)."""

    def __init__(self, *, divisor: int):
        if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < 4:
            self._MustUse__silence = True        # never built: no "created but never used"
            raise ValueError(f"divisor must be an int >= 4 (clock cycles per bit), "
                             f"not {divisor!r}")
        self.divisor = divisor
        super().__init__()


class UARTTx(_UART):
    """Transmitter: each byte accepted on ``data`` goes out on ``tx`` as one 8N1 frame.

    Ports
    -----
    data : stream of 8-bit bytes (in); ``ready`` is high while the line is idle.
    tx : the serial line (idles high).
    """

    data: In(stream.Signature(8))
    tx: Out(1, init=1)

    def elaborate(self, platform):
        m = Module()
        shreg = Signal(10, init=0x3FF)          # stop bit, data, start bit (sent LSB first)
        bits_left = Signal(range(11))
        timer = Signal(range(self.divisor))
        m.d.comb += [self.tx.eq(shreg[0]), self.data.ready.eq(bits_left == 0)]
        with m.If(bits_left == 0):
            with m.If(self.data.valid):
                m.d.sync += [shreg.eq(Cat(0, self.data.payload, 1)), bits_left.eq(10),
                             timer.eq(self.divisor - 1)]
        with m.Elif(timer == 0):
            m.d.sync += [shreg.eq(Cat(shreg[1:], 1)), bits_left.eq(bits_left - 1),
                         timer.eq(self.divisor - 1)]
        with m.Else():
            m.d.sync += timer.eq(timer - 1)
        return m


class UARTRx(_UART):
    """Receiver: samples ``rx`` in the middle of each bit and emits each good byte on ``data``.

    A low level that is gone by the middle of the start bit is a glitch and is ignored. A frame
    whose stop bit is low raises ``error`` for one cycle, emits nothing, and the receiver waits
    for the line to return high before it looks for the next start bit. A byte that arrives
    while the previous one is still waiting on ``data`` (``ready`` low) replaces it.

    Ports
    -----
    rx : the serial line (synchronized here with two flip-flops).
    data : stream of 8-bit bytes (out).
    error : one-cycle pulse on a framing error.
    """

    rx: In(1, init=1)
    data: Out(stream.Signature(8))
    error: Out(1)

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        sync1, line = Signal(init=1), Signal(init=1)
        m.d.sync += [sync1.eq(self.rx), line.eq(sync1)]
        timer = Signal(range(d))
        shreg = Signal(8)
        n = Signal(range(9))
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += self.data.valid.eq(0)
        m.d.comb += self.error.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq((d - 1) // 2)
                    m.next = "START"
            with m.State("START"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(line):
                        m.next = "IDLE"             # a glitch, not a start bit
                    with m.Else():
                        m.d.sync += [timer.eq(d - 1), n.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], line)), n.eq(n + 1), timer.eq(d - 1)]
                    with m.If(n == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(line):
                        m.d.sync += [self.data.payload.eq(shreg), self.data.valid.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.comb += self.error.eq(1)
                        m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        return m
