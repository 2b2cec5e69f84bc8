"""The host <-> board byte protocol (docs/protocol.md): constants, CRC, framing, field sizes.

Pure Python (no Amaranth): shared by the gateware (:mod:`snnc.fpga.top`), the host client
(:mod:`snnc.fpga.host`) and the tests. A frame, in both directions, is::

    SYNC (0xA5) | code | length (2 bytes, little-endian) | payload (length bytes) | CRC (2 bytes)

The CRC is CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no reflection, no final
XOR) over ``code``, ``length`` and ``payload``, sent most significant byte first, so that the CRC
of everything after SYNC including the CRC bytes is 0. Every other multi-byte field is
little-endian.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..hw.params import CoreParams, Counter

__all__ = ["SYNC", "VERSION", "Cmd", "Resp", "Err", "crc16", "encode_frame", "FrameParser",
           "Layout", "TOKEN_BYTES", "FRAME_TIMEOUT_BYTES"]

SYNC = 0xA5
VERSION = 1
#: Bytes per input token in a TOKENS payload: source index (2) and value (2), little-endian.
TOKEN_BYTES = 4
#: The board drops a partial frame after this many byte times without a byte (and, after an
#: error, waits for this much silence before it answers).
FRAME_TIMEOUT_BYTES = 32


class Cmd(enum.IntEnum):
    """Commands (host -> board)."""
    INFO = 0x01      #: no payload; ACK carries the board's sizes (:meth:`Layout.info_bytes`)
    CONFIG = 0x02    #: configuration writes: records ``sel (1) | addr (A) | data (D)``
    TOKENS = 0x03    #: one timestep's input tokens: records ``index (2) | value (2)``
    RUN = 0x04       #: ``T (2)``: run T timesteps, replaying the tokens every timestep
    READ = 0x05      #: ``sel (1) | addr (2) | count (2)``: read back count words


class Resp(enum.IntEnum):
    """Response codes (board -> host) other than errors."""
    ACK = 0x00       #: the command was done; payload: INFO sizes, READ words, or nothing
    EVENT = 0x81     #: during RUN: ``pop (1) | index (2) | strength (1)``
    TICK = 0x82      #: during RUN: end of a timestep (no payload)
    DONE = 0x83      #: end of RUN: ``4 + max_pops`` counters of R bytes each


class Err(enum.IntEnum):
    """Error codes (board -> host); the payload is the command byte (0 if none was read)."""
    BAD_CRC = 0xE1
    BAD_LENGTH = 0xE2
    UNKNOWN_COMMAND = 0xE3
    BUSY = 0xE4          #: bytes arrived while the board was busy (a run, or a response)
    TIMEOUT = 0xE5       #: a frame stopped arriving before its end
    FRAMING = 0xE6       #: a UART framing error inside a frame
    BAD_ARGUMENT = 0xE7  #: RUN with T = 0, READ with count = 0
    NO_TOKENS = 0xE8     #: RUN without tokens (none loaded since the last CONFIG or failed frame)


ERROR_TEXT = {
    Err.BAD_CRC: "the board received a frame with a bad CRC (a corrupted byte on the line)",
    Err.BAD_LENGTH: "the board rejected the frame's length",
    Err.UNKNOWN_COMMAND: "the board does not know the command",
    Err.BUSY: "bytes arrived while the board was busy and were discarded",
    Err.TIMEOUT: "the board timed out waiting for the rest of a frame (a byte was lost)",
    Err.FRAMING: "the board saw a UART framing error (wrong baud rate or a corrupted line)",
    Err.BAD_ARGUMENT: "the board rejected an argument (T = 0 or count = 0)",
    Err.NO_TOKENS: "RUN without input tokens (load them after CONFIG or after an error)",
}


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (``crc16(b"123456789") == 0x29B1``)."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def encode_frame(code: int, payload: bytes = b"") -> bytes:
    """One frame: SYNC, code, length, payload, CRC (big-endian)."""
    if len(payload) > 0xFFFF:
        raise ValueError(f"a frame carries at most 65535 payload bytes, not {len(payload)}")
    body = bytes([code & 0xFF]) + len(payload).to_bytes(2, "little") + bytes(payload)
    return bytes([SYNC]) + body + crc16(body).to_bytes(2, "big")


class FrameParser:
    """Incremental decoder of frames from a byte stream (the host's side).

    :meth:`feed` returns the complete frames found so far as ``(code, payload)``; a frame with a
    bad CRC is returned as ``(None, raw bytes)``. Bytes before a SYNC are skipped (counted in
    ``skipped``).
    """

    def __init__(self, max_payload: int = 0xFFFF):
        self.max_payload = max_payload
        self.buf = bytearray()
        self.skipped = 0

    def need(self) -> int:
        """Bytes still missing for the frame being assembled (at least 1)."""
        if len(self.buf) < 4:
            return max(1, 4 - len(self.buf) + 2)
        n = int.from_bytes(self.buf[2:4], "little")
        return max(1, 6 + n - len(self.buf))

    def feed(self, data: bytes) -> list:
        self.buf += data
        frames = []
        while True:
            start = self.buf.find(SYNC)
            if start < 0:
                self.skipped += len(self.buf)
                self.buf.clear()
                return frames
            self.skipped += start
            del self.buf[:start]
            if len(self.buf) < 4:
                return frames
            n = int.from_bytes(self.buf[2:4], "little")
            if n > self.max_payload:          # a corrupted length: not a frame start
                self.skipped += 1
                del self.buf[:1]
                continue
            if len(self.buf) < 6 + n:
                return frames
            raw = bytes(self.buf[:6 + n])
            del self.buf[:6 + n]
            if crc16(raw[1:]) != 0:
                frames.append((None, raw))
            else:
                frames.append((raw[1], raw[4:4 + n]))


@dataclass(frozen=True)
class Layout:
    """Field sizes of the protocol for a core built from ``params`` (with ``max_tokens``)."""
    params: CoreParams
    max_tokens: int

    @property
    def addr_bytes(self) -> int:
        return (self.params.cfg_addr_bits + 7) // 8

    @property
    def data_bytes(self) -> int:
        return (self.params.cfg_data_bits + 7) // 8

    @property
    def record_bytes(self) -> int:
        """Bytes of one CONFIG record."""
        return 1 + self.addr_bytes + self.data_bytes

    @property
    def word_bytes(self) -> int:
        """Bytes of one READ / DONE word (``rb_bits`` rounded up)."""
        return (self.params.rb_bits + 7) // 8

    @property
    def n_counters(self) -> int:
        return Counter.SPIKES + self.params.max_pops

    @property
    def max_payload(self) -> int:
        """Depth in bytes of the board's receive buffer: the longest CONFIG or TOKENS payload."""
        return max(TOKEN_BYTES * self.max_tokens, 16 * self.record_bytes)

    def info_bytes(self) -> bytes:
        """The payload of the ACK to INFO."""
        p = self.params
        return bytes([VERSION, self.addr_bytes, self.data_bytes, self.word_bytes, p.max_pops,
                      p.v_bits, p.strength_bits]) + self.max_tokens.to_bytes(2, "little") + \
            self.max_payload.to_bytes(2, "little")
