"""Host client of the board protocol (docs/protocol.md) over any byte transport.

A transport is an object with ``write(data: bytes)`` and ``read(n: int, timeout: float) -> bytes``
(at most ``n`` bytes; fewer, possibly none, when ``timeout`` seconds pass). :func:`open_serial`
makes one from a serial port with pyserial; :class:`snnc.fpga.simboard.SimBoard` is one backed by
an Amaranth simulation of :class:`snnc.fpga.top.HostTop`.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ..hw.params import CfgSel, Counter, ParamField
from .protocol import ERROR_TEXT, Cmd, Err, FrameParser, Resp, encode_frame

__all__ = ["BoardError", "BoardTimeout", "BoardClient", "open_serial", "SerialTransport",
           "NetworkInfo"]

#: Errors after which the same command can simply be sent again (a corrupted length byte shows
#: up as BAD_LENGTH: the board checks the length before the frame's end).
_TRANSIENT = {Err.BAD_CRC, Err.BAD_LENGTH, Err.TIMEOUT, Err.FRAMING, Err.BUSY}


class BoardError(RuntimeError):
    """The board answered with an error, or its answer was corrupted (``code`` is an
    :class:`Err`, or None for a corrupted or unexpected answer)."""

    def __init__(self, message: str, code=None):
        super().__init__(message)
        self.code = code


class BoardTimeout(BoardError):
    """No (complete) answer within the timeout."""


class SerialTransport:
    """A pyserial port as a transport."""

    def __init__(self, port):
        self.port = port

    def write(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def read(self, n: int, timeout: float) -> bytes:
        self.port.timeout = timeout
        return bytes(self.port.read(n))


def open_serial(port: str, baud: int = 115200, **client_args) -> "BoardClient":
    """A :class:`BoardClient` on serial port ``port`` (8N1 at ``baud``); needs pyserial."""
    try:
        import serial
    except ImportError:
        raise ImportError("talking to a board over a serial port needs pyserial: "
                          "pip install pyserial") from None
    ser = serial.Serial(port, baudrate=baud, bytesize=8, parity="N", stopbits=1, timeout=0.1)
    ser.reset_input_buffer()
    return BoardClient(SerialTransport(ser), baud=baud, **client_args)


class NetworkInfo:
    """What the client needs to know about a loaded network, read off its configuration writes."""

    def __init__(self, writes):
        regs, n_pops = {}, None
        for sel, addr, data in writes:
            if sel == CfgSel.PARAM:
                regs[(addr >> 4, addr & 15)] = data
            elif sel == CfgSel.GLOBAL and addr == 0:
                n_pops = data
        if n_pops is None:
            raise ValueError("the configuration writes do not set the number of populations "
                             "(GLOBAL 0)")
        self.n_pops = n_pops
        self.pops = [{f.name: regs.get((k, int(f)), 0) for f in ParamField} for k in range(n_pops)]
        self.n_neurons = max((q["NBASE"] + q["SIZE"] for q in self.pops[1:]), default=0)
        self.readout = self.pops[-1]
        self.membrane_readout = not self.readout["SPIKING"]


class BoardClient:
    """Speaks the protocol; every read has a timeout, every frame a CRC.

    Parameters
    ----------
    transport : object with ``write(bytes)`` and ``read(n, timeout)``
    baud : int
        The line rate, for messages and to allow for the time a long frame takes on the line.
    timeout : float
        Seconds to wait for an answer to start arriving (plus the answer's time on the line).
    retries : int
        How often a command is sent again after a transient error (a corrupted or lost byte).
    quiet : float
        Seconds of silence that end a resynchronization after an error.
    """

    def __init__(self, transport, *, baud: int = 115200, timeout: float = 2.0, retries: int = 2,
                 quiet: float = 0.05):
        self.transport = transport
        self.baud, self.timeout, self.retries, self.quiet = baud, timeout, retries, quiet
        self.parser = FrameParser()
        self.pending = deque()
        self._info = None

    # Framing ---------------------------------------------------------------------------------
    def _line_time(self, n_bytes: int) -> float:
        return 10 * n_bytes / self.baud

    def _read_frame(self, extra: float = 0.0):
        """The next frame ``(code, payload)``; raises :class:`BoardTimeout` or, on a bad CRC,
        :class:`BoardError`. ``extra`` seconds are added to the wait for its first byte."""
        budget = self.timeout + extra
        started = False
        while not self.pending:
            data = self.transport.read(self.parser.need(), budget)
            if not data:
                if started or self.parser.buf:
                    raise BoardTimeout(
                        f"the board's answer stopped after {len(self.parser.buf)} bytes of a "
                        f"frame (nothing for {budget:.3g} s): a byte was lost on the line")
                raise BoardTimeout(
                    f"no answer from the board within {budget:.3g} s: is it programmed and "
                    f"connected at {self.baud} baud?")
            self.pending.extend(self.parser.feed(data))
            if not started and len(self.parser.buf) >= 4:
                # A frame has begun: allow for its whole length on the line.
                started = True
                n = int.from_bytes(self.parser.buf[2:4], "little")
                budget = self.timeout + self._line_time(n + 6)
        code, payload = self.pending.popleft()
        if code is None:
            raise BoardError(f"corrupted answer from the board (bad CRC): {payload.hex()}")
        return code, payload

    def resync(self) -> None:
        """Discard everything until the line has been quiet for ``quiet`` seconds."""
        while self.transport.read(4096, self.quiet):
            pass
        self.parser = FrameParser()
        self.pending.clear()

    def _expect_ack(self, cmd: int, extra: float):
        code, payload = self._read_frame(extra)
        if code == Resp.ACK:
            return payload
        name = Cmd(cmd).name if cmd in set(Cmd) else f"command 0x{cmd:02x}"
        if code in set(Err):
            err = Err(code)
            raise BoardError(f"{name}: {ERROR_TEXT[err]} ({err.name})", err)
        raise BoardError(f"{name}: unexpected answer code 0x{code:02x}")

    def command(self, cmd: Cmd, payload: bytes = b"", *, then=None):
        """Send ``cmd`` and return the ACK's payload (or ``then()``'s result, called after the
        ACK); transient failures are retried ``retries`` times after a resynchronization."""
        frame = encode_frame(cmd, payload)
        for attempt in range(self.retries + 1):
            try:
                self.transport.write(frame)
                # The command's own time on the line counts against the wait for its answer.
                ack = self._expect_ack(cmd, self._line_time(len(frame)))
                return then() if then else ack
            except BoardError as e:
                if attempt == self.retries or not (e.code is None or e.code in _TRANSIENT):
                    raise
                self.resync()

    # Commands --------------------------------------------------------------------------------
    def info(self) -> dict:
        """The board's sizes (cached)."""
        if self._info is None:
            b = self.command(Cmd.INFO)
            if len(b) < 11 or b[0] != 1:
                raise BoardError(f"unsupported board (INFO answer {b.hex()}); protocol version 1 "
                                 "expected")
            self._info = {"version": b[0], "addr_bytes": b[1], "data_bytes": b[2],
                          "word_bytes": b[3], "max_pops": b[4], "v_bits": b[5],
                          "strength_bits": b[6], "max_tokens": int.from_bytes(b[7:9], "little"),
                          "max_payload": int.from_bytes(b[9:11], "little")}
        return self._info

    def configure(self, writes) -> int:
        """Load configuration writes ``(sel, addr, data)``; returns the number of frames sent."""
        inf = self.info()
        a, d = inf["addr_bytes"], inf["data_bytes"]
        rec = 1 + a + d
        per = inf["max_payload"] // rec
        records = []
        for sel, addr, data in writes:
            if not (0 <= sel < 8 and 0 <= addr < 1 << 8 * a and 0 <= data < 1 << 8 * d):
                raise ValueError(f"configuration write {(sel, addr, data)} does not fit the board")
            records.append(bytes([sel]) + addr.to_bytes(a, "little") + data.to_bytes(d, "little"))
        frames = 0
        for lo in range(0, len(records), per):
            self.command(Cmd.CONFIG, b"".join(records[lo:lo + per]))
            frames += 1
        return frames

    def load_tokens(self, x) -> int:
        """Load one sample's input: a token ``(index, value)`` per nonzero value of ``x``."""
        x = np.asarray(x, dtype=np.int64).reshape(-1)
        idx = np.flatnonzero(x)
        if len(idx) > self.info()["max_tokens"]:
            raise ValueError(f"the sample has {len(idx)} nonzero inputs; the board holds "
                             f"{self.info()['max_tokens']} tokens")
        payload = b"".join(int(i).to_bytes(2, "little") + (int(x[i]) & 0xFFFF).to_bytes(2, "little")
                           for i in idx)
        self.command(Cmd.TOKENS, payload)
        return len(idx)

    def run(self, timesteps: int):
        """Run ``timesteps`` timesteps on the loaded tokens; returns ``(events, counters)`` with
        events ``[t, pop, index, strength]`` in the order the core emitted them."""
        if not 1 <= timesteps <= 0xFFFF:
            raise ValueError(f"timesteps must be in 1..65535, not {timesteps}")
        return self.command(Cmd.RUN, timesteps.to_bytes(2, "little"), then=self._collect_run)

    def _collect_run(self):
        events, t = [], 0
        wb = self.info()["word_bytes"]
        while True:
            code, payload = self._read_frame()
            if code == Resp.EVENT and len(payload) == 4:
                events.append([t, payload[0], int.from_bytes(payload[1:3], "little"), payload[3]])
            elif code == Resp.TICK:
                t += 1
            elif code == Resp.DONE:
                return events, [int.from_bytes(payload[i:i + wb], "little")
                                for i in range(0, len(payload), wb)]
            elif code in set(Err):
                raise BoardError(f"RUN: {ERROR_TEXT[Err(code)]} ({Err(code).name})", Err(code))
            else:
                raise BoardError(f"RUN: unexpected frame 0x{code:02x} {payload.hex()}")

    def read(self, sel: int, addr: int, count: int) -> list[int]:
        """``count`` raw readback words from ``addr`` (``sel`` 0: membranes, 1: counters)."""
        wb = self.info()["word_bytes"]
        b = self.command(Cmd.READ, bytes([sel]) + addr.to_bytes(2, "little") +
                         count.to_bytes(2, "little"))
        if len(b) != count * wb:
            raise BoardError(f"READ: {len(b)} bytes for {count} words of {wb} bytes")
        return [int.from_bytes(b[i:i + wb], "little") for i in range(0, len(b), wb)]

    def read_counters(self) -> list[int]:
        """Every counter (:class:`snnc.hw.params.Counter`, then spikes per population)."""
        return self.read(1, 0, Counter.SPIKES + self.info()["max_pops"])

    def read_membranes(self, net: NetworkInfo, lo: int = 0, n: int | None = None) -> list[int]:
        """Membranes ``lo .. lo+n-1`` as the contract states them: signed ``v_bits``, and a
        max-pool gate state unpacked to ``best_acc * 64 + best_idx``."""
        n = net.n_neurons - lo if n is None else n
        if n <= 0:
            return []
        inf = self.info()
        vb, sb = inf["v_bits"], inf["strength_bits"]
        out = []
        for g, word in enumerate(self.read(0, lo, n), start=lo):
            word &= (1 << vb) - 1
            gate = any(q["GATE"] and q["NBASE"] <= g < q["NBASE"] + q["SIZE"] for q in net.pops[1:])
            out.append(word >> sb if gate else word - (1 << vb) if word >> (vb - 1) else word)
        return out

    def run_samples(self, writes, x_int, timesteps: int, *, membranes: bool = True,
                    load=None) -> list[dict]:
        """Load the network once, then run each sample of ``x_int`` (shape (B, n_in)).

        ``writes`` are the network's configuration writes; the client reads the populations off
        them. ``load`` are the writes actually sent (default: all of ``writes``); a board whose
        bitstream holds the network needs only those it cannot hold (``[]`` when none).

        Returns per sample ``{"events", "counters", "membranes" (if asked), "prediction"}``: the
        prediction is the argmax (lowest index on ties) of the readout population's membranes
        for a membrane readout, of its summed spike strengths for a spike-count readout.
        """
        net = NetworkInfo(writes)
        self.configure(writes if load is None else load)
        x = np.asarray(x_int, dtype=np.int64)
        x = x.reshape(len(x), -1)
        out = []
        ro = net.readout
        for sample in x:
            self.load_tokens(sample)
            events, counters = self.run(timesteps)
            res = {"events": events, "counters": counters[:Counter.SPIKES + net.n_pops]}
            if membranes:
                res["membranes"] = self.read_membranes(net)
            if net.membrane_readout:
                v = (res["membranes"][ro["NBASE"]:ro["NBASE"] + ro["SIZE"]] if membranes else
                     self.read_membranes(net, ro["NBASE"], ro["SIZE"]))
                res["prediction"] = int(np.argmax(v))
            else:
                totals = np.zeros(ro["SIZE"], dtype=np.int64)
                for _, pop, index, strength in events:
                    if pop == net.n_pops - 1:
                        totals[index] += strength
                res["prediction"] = int(np.argmax(totals))
            out.append(res)
        return out
