"""Board top level: the core behind a UART, driven by the byte protocol of docs/protocol.md.

Host client and protocol model: :mod:`snnc.fpga.host`, :mod:`snnc.fpga.protocol`.

:class:`HostTop` holds the :class:`snnc.hw.core.Core`, an 8N1 UART, one byte-wide receive
buffer (block RAM) and the protocol engine. A frame's payload is written into the buffer as it
arrives and acted on only once its CRC checked out: CONFIG records are then replayed into the
core's configuration port; TOKENS stay in the buffer and are replayed into the core's input,
followed by an end-of-timestep token, once per timestep of a RUN. Output events leave as
EVENT/TICK frames straight from the core's output stream (backpressure stalls the core, which
adds to its TOTAL counter only). Counters and membranes are read through the core's readback
port as the response bytes go out, so there is no capture memory.

HostTop requests no platform resources: a board wrapper connects ``rx``/``tx`` to the UART pins.
Everything runs in the ``sync`` domain.
"""


from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, fifo, memory, wiring
from amaranth.lib.crc.catalog import CRC16_CCITT_FALSE
from amaranth.lib.wiring import In, Out

from ..hw.core import Core, input_layout, output_layout
from ..hw.params import CfgSel, CoreParams
from .protocol import FRAME_TIMEOUT_BYTES, SYNC, TOKEN_BYTES, Cmd, Err, Layout, Resp
from .uart import UARTRx, UARTTx, uart_divisor

__all__ = ["HostTop"]

# What the frame sender takes its payload bytes from.
_INFO, _CMD, _EVENT, _WORDS = range(4)


class HostTop(wiring.Component):
    """The core, a UART and the protocol engine; ports ``rx`` (in) and ``tx`` (out) only.

    Parameters
    ----------
    params : CoreParams
        The core to build.
    clk_hz, baud : int
        Clock frequency and baud rate; the UART divides by ``clk_hz // baud`` (at least 4).
    max_tokens : int, optional
        Most input tokens (nonzero inputs) per sample; sizes the receive buffer
        (``max(4 * max_tokens, 16 * CONFIG record)`` bytes, :attr:`Layout.max_payload`).
        Default ``params.max_sources``.
    spram : set of str, optional
        Core memories to put on iCE40 SPRAM (see :class:`snnc.hw.core.Core`).
    ram_records : bool
        The core's population records in block RAM (see :class:`snnc.hw.core.Core`).
    network : list of (cfg_sel, cfg_addr, cfg_data), optional
        A network built into the core (``Core(params, network=...)``): it runs without any
        CONFIG frame, except for the memories on SPRAM, which the host must still load.
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)

    def __init__(self, params: CoreParams, *, clk_hz: int, baud: int = 115200,
                 max_tokens: int | None = None, spram=(), ram_records=False, network=None):
        self.spram = frozenset(spram)
        self.ram_records = bool(ram_records)
        self.network = network
        try:
            self._configure(params, clk_hz, baud, max_tokens)
        except (TypeError, ValueError):
            self._MustUse__silence = True        # never built: no "created but never used"
            raise
        super().__init__()

    def _configure(self, params, clk_hz, baud, max_tokens):
        if not isinstance(params, CoreParams):
            raise TypeError(f"expected CoreParams, not {params!r}")
        self.divisor = uart_divisor(clk_hz, baud)
        if max_tokens is None:
            max_tokens = params.max_sources
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or \
                not 1 <= max_tokens <= 0xFFFF // TOKEN_BYTES:
            raise ValueError(f"max_tokens must be an int in 1..{0xFFFF // TOKEN_BYTES}, "
                             f"not {max_tokens!r}")
        if params.source_addr_bits > 16:
            raise ValueError(f"a token carries a 16-bit source index; the core has "
                             f"{params.max_sources} sources")
        self.params = params
        self.clk_hz, self.baud, self.max_tokens = clk_hz, baud, max_tokens
        self.layout = Layout(params, max_tokens)
        if self.layout.max_payload > 0xFFFF:
            raise ValueError(f"the receive buffer ({self.layout.max_payload} bytes) exceeds the "
                             "16-bit frame length")

    def elaborate(self, platform):
        m = Module()
        p, lay = self.params, self.layout
        m.submodules.core = core = Core(p, spram=self.spram, ram_records=self.ram_records,
                                        network=self.network)
        # Two-entry queues on both event streams: the core's global stall (its ``en``) then
        # depends on queue levels held in registers, not on the host's state machines.
        ilay, olay = input_layout(p), output_layout(p)
        m.submodules.in_q = in_q = fifo.SyncFIFO(width=ilay.size, depth=2)
        m.submodules.out_q = out_q = fifo.SyncFIFO(width=olay.size, depth=2)
        m.d.comb += [core.inp.valid.eq(in_q.r_rdy), core.inp.payload.eq(in_q.r_data),
                     in_q.r_en.eq(core.inp.ready),
                     out_q.w_en.eq(core.out.valid), out_q.w_data.eq(core.out.payload),
                     core.out.ready.eq(out_q.w_rdy)]
        inp_payload = data.View(ilay, in_q.w_data)
        out_payload = data.View(olay, out_q.r_data)
        m.submodules.urx = urx = UARTRx(divisor=self.divisor)
        m.submodules.utx = utx = UARTTx(divisor=self.divisor)
        m.submodules.crc_rx = crc_rx = CRC16_CCITT_FALSE(data_width=8).create()
        m.submodules.crc_tx = crc_tx = CRC16_CCITT_FALSE(data_width=8).create()
        m.submodules.buf = buf = memory.Memory(shape=8, depth=lay.max_payload, init=[])
        buf_w, buf_r = buf.write_port(), buf.read_port()
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx), urx.data.ready.eq(1)]

        got, byte = urx.data.valid, urx.data.payload
        limit = FRAME_TIMEOUT_BYTES * 10 * self.divisor
        idle = Signal(range(limit + 1))
        cmd = Signal(8)
        length = Signal(16)
        # Decided while the frame's header arrives, so that no byte-time path compares widths:
        # the payload's last index and whether the payload is stored (CONFIG, TOKENS).
        len_m1 = Signal(16)
        stores = Signal()
        # The CHECK state's tests, registered while the frame arrives (the payload is complete
        # in the CRC states): length 0, 2 or 5, a TOKENS length of whole tokens within the
        # buffer, a zero RUN count, a READ count out of range.
        flags = {k: Signal(name=f"chk_{k}")
                 for k in ("len0", "len2", "len5", "tokens", "t0", "rd_bad")}
        count = Signal(16)
        recb = Signal(range(lay.record_bytes))
        arg = Signal(40)                     # first five payload bytes (RUN, READ arguments)
        err = Signal(8)
        lost = Signal()                      # a byte arrived while not parsing
        parsing = Signal()
        n_tok = Signal(range(self.max_tokens + 1))
        tok_ok = Signal()                    # the buffer holds the tokens of a good TOKENS frame
        T = Signal(16)

        # Frame sender (its state machine is below); the main FSM loads these and sets go (a register the sender clears).
        snd_go, snd_busy = Signal(), Signal()
        snd_code, snd_len, snd_kind = Signal(8), Signal(16), Signal(2)
        rd_sel, rd_addr = Signal(), Signal(16)

        def send(code, kind, n):
            # A registered request: the sender starts one cycle later, so the main state
            # machine's decisions do not reach the sender's registers in the same cycle.
            m.d.sync += [snd_go.eq(1), snd_code.eq(code), snd_kind.eq(kind), snd_len.eq(n)]

        def fail(code):
            m.d.sync += err.eq(code)

        # Configuration records, gathered from the buffer.
        rp = Signal(16)
        bi = Signal(range(max(lay.record_bytes, TOKEN_BYTES)))
        rec = Signal(8 * lay.record_bytes)
        a0, d0 = 8, 8 + 8 * lay.addr_bytes
        # Configuration writes leave from registers (a write reaches the core the cycle after
        # the state that issues it), so the host's state machine is not in the core's paths.
        cfg_we, cfg_sel = Signal(), Signal(3)
        cfg_addr, cfg_data = Signal(len(core.cfg_addr)), Signal(len(core.cfg_data))
        m.d.comb += [core.cfg_we.eq(cfg_we), core.cfg_sel.eq(cfg_sel), core.cfg_addr.eq(cfg_addr),
                     core.cfg_data.eq(cfg_data)]
        m.d.sync += cfg_we.eq(0)

        # Token replay (its own state machine), reading the same buffer.
        replay_go, replaying = Signal(), Signal()
        # The core's start pulse, high in RUN_START, from a register: the core's start-up
        # loads do not wait on this state machine's decoding.
        start_q = Signal()
        m.d.sync += start_q.eq(0)
        m.d.comb += core.start.eq(start_q)
        trp = Signal(16)
        tb = Signal(2)
        tok = Signal(32)
        m.d.comb += [buf_r.addr.eq(Mux(replaying, trp, rp))]

        with m.If(got & ~parsing):
            m.d.sync += lost.eq(1)

        with m.FSM(name="engine"):
            def parse_state():
                """Common to the states inside a frame: CRC, inter-byte timeout, framing."""
                m.d.comb += parsing.eq(1)
                m.d.comb += [crc_rx.data.eq(byte), crc_rx.valid.eq(got)]
                m.d.sync += idle.eq(idle + 1)
                with m.If(got):
                    m.d.sync += idle.eq(0)
                with m.If(urx.error):
                    fail(Err.FRAMING)
                    m.next = "DRAIN"
                with m.Elif(idle == limit):
                    fail(Err.TIMEOUT)
                    m.next = "SEND_ERR"

            with m.State("HUNT"):
                m.d.comb += parsing.eq(1)
                with m.If(lost):
                    m.d.sync += [lost.eq(0), err.eq(Err.BUSY), cmd.eq(0), idle.eq(0)]
                    m.next = "DRAIN"
                with m.Elif(got & (byte == SYNC)):
                    m.d.comb += crc_rx.start.eq(1)
                    m.d.sync += [cmd.eq(0), idle.eq(0)]
                    m.next = "CMD"
            with m.State("CMD"):
                parse_state()
                with m.If(got):
                    m.d.sync += [cmd.eq(byte),
                                 stores.eq((byte == Cmd.CONFIG) | (byte == Cmd.TOKENS))]
                    m.next = "LEN0"
            with m.State("LEN0"):
                parse_state()
                with m.If(got):
                    m.d.sync += length[:8].eq(byte)
                    m.next = "LEN1"
            with m.State("LEN1"):
                parse_state()
                with m.If(got):
                    n = Cat(length[:8], byte)
                    m.d.sync += [length[8:].eq(byte), count.eq(0), recb.eq(0), len_m1.eq(n - 1),
                                 flags["len0"].eq(n == 0), flags["len2"].eq(n == 2),
                                 flags["len5"].eq(n == 5),
                                 flags["tokens"].eq((n[:2] == 0) & ((n >> 2) <= self.max_tokens))]
                    with m.If(n > lay.max_payload):
                        fail(Err.BAD_LENGTH)
                        m.next = "DRAIN"
                    with m.Elif(n == 0):
                        m.next = "CRC0"
                    with m.Else():
                        m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                parse_state()
                m.d.comb += [buf_w.addr.eq(count), buf_w.data.eq(byte),
                             buf_w.en.eq(got & stores)]
                with m.If(got & stores):
                    m.d.sync += tok_ok.eq(0)         # the payload overwrites the tokens
                with m.If(got):
                    with m.If(count < 5):
                        m.d.sync += arg.word_select(count[:3], 8).eq(byte)
                    m.d.sync += [count.eq(count + 1),
                                 recb.eq(Mux(recb == lay.record_bytes - 1, 0, recb + 1))]
                    with m.If(count == len_m1):
                        m.next = "CRC0"
            with m.State("CRC0"):
                parse_state()
                with m.If(got):
                    m.next = "CRC1"
            with m.State("CRC1"):
                parse_state()
                rd_count = arg[24:40]
                m.d.sync += [flags["t0"].eq(arg[:16] == 0),
                             flags["rd_bad"].eq((rd_count == 0) |
                                                (rd_count > 0xFFFF // lay.word_bytes))]
                with m.If(got):
                    m.next = "CHECK"
            with m.State("CHECK"):
                self._dispatch(m, crc_rx, cmd, length, recb, arg, n_tok, tok_ok, T, rd_sel,
                               rd_addr, rp, bi, fail, send, flags)
            with m.State("DRAIN"):
                # After an error, wait for the line to fall silent, then answer.
                m.d.comb += parsing.eq(1)
                m.d.sync += idle.eq(idle + 1)
                with m.If(got | urx.error):
                    m.d.sync += idle.eq(0)
                with m.Elif(idle >= limit):
                    m.next = "SEND_ERR"
            with m.State("SEND_ERR"):
                send(err, _CMD, 1)
                m.next = "SEND"
            with m.State("SEND"):
                with m.If(~snd_busy):
                    m.next = "HUNT"
            with m.State("CFG_A"):
                m.next = "CFG_B"
            with m.State("CFG_B"):
                m.d.sync += [rec.word_select(bi, 8).eq(buf_r.data), rp.eq(rp + 1), bi.eq(bi + 1)]
                with m.If(bi == lay.record_bytes - 1):
                    m.next = "CFG_W"
                with m.Else():
                    m.next = "CFG_A"
            with m.State("CFG_W"):
                m.d.sync += [cfg_we.eq(1), cfg_sel.eq(rec[:3]), cfg_addr.eq(rec[a0:d0]),
                             cfg_data.eq(rec[d0:])]
                m.d.sync += bi.eq(0)
                with m.If(rp == length):
                    send(Resp.ACK, _CMD, 0)
                    m.next = "SEND"
                with m.Else():
                    m.next = "CFG_A"
            with m.State("RUN_ACK"):
                with m.If(~snd_busy):
                    m.next = "RUN_CFG"
            with m.State("RUN_CFG"):
                m.d.sync += [cfg_we.eq(1), cfg_sel.eq(CfgSel.GLOBAL), cfg_addr.eq(1),
                             cfg_data.eq(T)]
                m.next = "RUN_GAP"
            with m.State("RUN_GAP"):                 # the timesteps write reaches the core
                m.d.sync += start_q.eq(1)
                m.next = "RUN_START"
            with m.State("RUN_START"):
                m.d.comb += replay_go.eq(1)
                m.next = "RUN"
            with m.State("RUN"):
                with m.If(~snd_busy):
                    with m.If(out_q.r_rdy):
                        m.d.comb += out_q.r_en.eq(1)
                        with m.If(out_payload.eot):
                            send(Resp.TICK, _EVENT, 0)
                        with m.Else():
                            send(Resp.EVENT, _EVENT, 4)
                    with m.Elif(~core.busy & ~replaying):
                        m.d.sync += [rd_sel.eq(1), rd_addr.eq(0)]
                        send(Resp.DONE, _WORDS, lay.n_counters * lay.word_bytes)
                        m.next = "SEND"

        ev = Signal(32)
        with m.If(out_q.r_rdy & out_q.r_en):
            o = out_payload
            m.d.sync += ev.eq(Cat(o.pop, Const(0, 8 - len(o.pop)), o.index,
                                  Const(0, 16 - len(o.index)), o.strength))

        # Token replay: each token's four bytes are read from the buffer, then offered to the
        # core; after the last token an end-of-timestep token; all of it T times.
        tok_i = Signal(range(self.max_tokens + 1))
        t = Signal(16)
        is_eot = Signal()
        m.d.comb += [inp_payload.index.eq(tok[:16]), inp_payload.value.eq(tok[16:]),
                     inp_payload.eot.eq(is_eot)]
        with m.FSM(name="replay"):
            with m.State("IDLE"):
                with m.If(replay_go):
                    m.d.sync += [replaying.eq(1), tok_i.eq(0), t.eq(0), trp.eq(0)]
                    m.next = "NEXT"
            with m.State("NEXT"):
                m.d.sync += [tb.eq(0), is_eot.eq(tok_i == n_tok)]
                with m.If(tok_i == n_tok):
                    m.next = "OFFER"
                with m.Else():
                    m.next = "READ_A"
            with m.State("READ_A"):
                m.next = "READ_B"
            with m.State("READ_B"):
                m.d.sync += [tok.word_select(tb, 8).eq(buf_r.data), trp.eq(trp + 1), tb.eq(tb + 1)]
                with m.If(tb == TOKEN_BYTES - 1):
                    m.next = "OFFER"
                with m.Else():
                    m.next = "READ_A"
            with m.State("OFFER"):
                m.d.comb += in_q.w_en.eq(1)
                with m.If(in_q.w_rdy):
                    with m.If(is_eot):
                        m.d.sync += [tok_i.eq(0), trp.eq(0), t.eq(t + 1)]
                        with m.If(t + 1 == T):
                            m.d.sync += replaying.eq(0)
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "NEXT"
                    with m.Else():
                        m.d.sync += tok_i.eq(tok_i + 1)
                        m.next = "NEXT"

        self._sender(m, utx, crc_tx, core, snd_go, snd_busy, snd_code, snd_len, snd_kind,
                     rd_sel, rd_addr, cmd, ev)
        return m

    def _dispatch(self, m, crc_rx, cmd, length, recb, arg, n_tok, tok_ok, T, rd_sel, rd_addr,
                  rp, bi, fail, send, flags):
        """CHECK: the whole frame is in; act on it if its CRC and length are right."""
        lay = self.layout

        def reject(code):
            fail(code)
            m.next = "SEND_ERR"

        with m.If(~crc_rx.match_detected):
            fail(Err.BAD_CRC)
            m.next = "DRAIN"
        with m.Elif(cmd == Cmd.INFO):
            with m.If(flags["len0"]):
                send(Resp.ACK, _INFO, len(lay.info_bytes()))
                m.next = "SEND"
            with m.Else():
                reject(Err.BAD_LENGTH)
        with m.Elif(cmd == Cmd.CONFIG):
            with m.If(~flags["len0"] & (recb == 0)):
                m.d.sync += [rp.eq(0), bi.eq(0)]
                m.next = "CFG_A"
            with m.Else():
                reject(Err.BAD_LENGTH)
        with m.Elif(cmd == Cmd.TOKENS):
            with m.If(flags["tokens"]):
                m.d.sync += [n_tok.eq(length >> 2), tok_ok.eq(1)]
                send(Resp.ACK, _CMD, 0)
                m.next = "SEND"
            with m.Else():
                reject(Err.BAD_LENGTH)
        with m.Elif(cmd == Cmd.RUN):
            with m.If(~flags["len2"]):
                reject(Err.BAD_LENGTH)
            with m.Elif(flags["t0"]):
                reject(Err.BAD_ARGUMENT)
            with m.Elif(~tok_ok):
                reject(Err.NO_TOKENS)
            with m.Else():
                m.d.sync += T.eq(arg[:16])
                send(Resp.ACK, _CMD, 0)
                m.next = "RUN_ACK"
        with m.Elif(cmd == Cmd.READ):
            count = arg[24:40]
            with m.If(~flags["len5"]):
                reject(Err.BAD_LENGTH)
            with m.Elif(flags["rd_bad"]):
                reject(Err.BAD_ARGUMENT)
            with m.Else():
                m.d.sync += [rd_sel.eq(arg[0]), rd_addr.eq(arg[8:24])]
                send(Resp.ACK, _WORDS, count * lay.word_bytes)
                m.next = "SEND"
        with m.Else():
            reject(Err.UNKNOWN_COMMAND)

    def _sender(self, m, utx, crc_tx, core, go, busy, code, n, kind, rd_sel, rd_addr, cmd, ev):
        """Frame sender: SYNC, code, length, payload (from ``kind``), CRC, into the UART."""
        lay = self.layout
        wb = lay.word_bytes
        pi = Signal(16)
        wi = Signal(16)
        bw = Signal(range(wb))
        info = Array(Const(b, 8) for b in lay.info_bytes())
        rb = Cat(core.rb_data, Const(0, 8 * wb - len(core.rb_data)))
        pbyte = Signal(8)
        pbyte_q = Signal(8)
        with m.Switch(kind):
            with m.Case(_INFO):
                m.d.comb += pbyte.eq(info[pi[:4]])
            with m.Case(_CMD):
                m.d.comb += pbyte.eq(cmd)
            with m.Case(_EVENT):
                m.d.comb += pbyte.eq(ev.word_select(pi[:2], 8))
            with m.Case(_WORDS):
                m.d.comb += pbyte.eq(rb.word_select(bw, 8))
        m.d.comb += [core.rb_sel.eq(rd_sel), core.rb_addr.eq(rd_addr + wi)]
        tx = utx.data
        accept = tx.valid & tx.ready

        def put(value, nxt, crc=True):
            m.d.comb += [tx.valid.eq(1), tx.payload.eq(value)]
            if crc:
                m.d.comb += [crc_tx.data.eq(value), crc_tx.valid.eq(accept)]
            with m.If(accept):
                m.next = nxt

        def after_length():
            with m.If(n == 0):
                m.next = "CRC_HI"
            with m.Else():
                m.next = "SETTLE"

        with m.FSM(name="sender"):
            with m.State("IDLE"):
                m.d.comb += busy.eq(go)
                with m.If(go):
                    m.d.comb += crc_tx.start.eq(1)
                    m.d.sync += [go.eq(0), pi.eq(0), wi.eq(0), bw.eq(0)]
                    m.next = "SYNC"
            with m.State("SYNC"):
                m.d.comb += busy.eq(1)
                put(SYNC, "CODE", crc=False)
            with m.State("CODE"):
                m.d.comb += busy.eq(1)
                put(code, "LEN0")
            with m.State("LEN0"):
                m.d.comb += busy.eq(1)
                put(n[:8], "LEN1")
            with m.State("LEN1"):
                m.d.comb += busy.eq(1)
                put(n[8:], "LEN1")
                with m.If(accept):
                    after_length()
            with m.State("SETTLE"):          # the readback port answers one cycle later
                m.d.comb += busy.eq(1)
                m.next = "LATCH"
            with m.State("LATCH"):           # the payload byte into a register, off the
                m.d.comb += busy.eq(1)       # memory-to-UART path
                m.d.sync += pbyte_q.eq(pbyte)
                m.next = "PAY"
            with m.State("PAY"):
                m.d.comb += busy.eq(1)
                put(pbyte_q, "PAY")
                with m.If(accept):
                    m.d.sync += [pi.eq(pi + 1), bw.eq(Mux(bw == wb - 1, 0, bw + 1))]
                    with m.If(bw == wb - 1):
                        m.d.sync += wi.eq(wi + 1)
                    with m.If(pi == n - 1):
                        m.next = "CRC_HI"
                    with m.Else():
                        m.next = "SETTLE"
            with m.State("CRC_HI"):
                m.d.comb += busy.eq(1)
                put(crc_tx.crc[8:], "CRC_LO", crc=False)
            with m.State("CRC_LO"):
                m.d.comb += busy.eq(1)
                put(crc_tx.crc[:8], "IDLE", crc=False)
