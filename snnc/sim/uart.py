"""Twin model of :mod:`snnc.fpga.uart`: the bits of an 8N1 frame, and a line decoder that
samples a waveform the way :class:`snnc.fpga.uart.UARTRx` does."""

from __future__ import annotations

__all__ = ["frame_bits", "LineDecoder"]


def frame_bits(byte: int, *, stop: int = 1) -> list[int]:
    """Line levels of one 8N1 frame, one per bit time: start (0), data LSB first, stop."""
    if not 0 <= byte <= 255:
        raise ValueError(f"a UART byte must be in 0..255, not {byte!r}")
    return [0] + [(byte >> i) & 1 for i in range(8)] + [stop]


class LineDecoder:
    """Feed one line level per clock cycle; collects the bytes (and framing errors) it decodes.

    Same rule as the receiver: the start bit is confirmed in its middle (``(divisor - 1) // 2``
    cycles after the falling level is seen), then each bit is sampled ``divisor`` cycles later.
    """

    def __init__(self, divisor: int):
        self.divisor = divisor
        self.bytes: list[int] = []
        self.errors = 0
        self._state = "idle"
        self._timer = 0
        self._bits: list[int] = []

    def feed(self, level: int) -> None:
        if self._state == "idle":
            if not level:
                self._state, self._timer = "start", (self.divisor - 1) // 2
            return
        if self._state == "break":
            if level:
                self._state = "idle"
            return
        if self._timer:
            self._timer -= 1
            return
        self._timer = self.divisor - 1
        if self._state == "start":
            self._state, self._bits = ("bits", []) if not level else ("idle", [])
        elif len(self._bits) < 8:
            self._bits.append(level)
        elif level:
            self.bytes.append(sum(b << i for i, b in enumerate(self._bits)))
            self._state = "idle"
        else:
            self.errors += 1
            self._state = "break"
