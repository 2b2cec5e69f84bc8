import sys

import numpy as np
import pytest
from amaranth.hdl import Fragment

from snnc.fpga.host import BoardClient, BoardError, BoardTimeout, open_serial
from snnc.fpga.protocol import Cmd, Err, FrameParser, Resp, crc16, encode_frame
from snnc.fpga.simboard import SimBoard
from snnc.hw.mapping import config_writes, core_params_for, map_graph
from snnc.hw.params import CfgSel, Counter, CoreParams
from snnc.ir import Readout
from snnc.sim.core import CoreModel
from snnc.sim.reference import run as ref_run
from snnc.testing import random_graph

BAUD = 1_000_000
CLK_HZ = 8 * BAUD            # 8 clock cycles per bit for the end-to-end comparison,
FAST_CLK_HZ = 4 * BAUD       # 4 for the protocol's error paths (half the simulated cycles)
TIMEOUT = 6e-4               # simulated seconds (the board's frame timeout is 32 bytes = 0.32 ms)


def sim_client(params, clk_hz=FAST_CLK_HZ, **kw):
    board = SimBoard(params, baud=BAUD, clk_hz=clk_hz)
    client = BoardClient(board, baud=BAUD, timeout=TIMEOUT, quiet=2e-4, **kw)
    return board, client


def ref_events(ref, b, T):
    """Output events of sample ``b`` in the core's order (timestep, population, neuron)."""
    return [[t, k, int(i), int(s[t, b, i])] for t in range(T)
            for k, s in enumerate(ref.spikes, start=1) for i in np.flatnonzero(s[t, b])]


def _network_and_samples(rng, g, T):
    """``g`` mapped, the smallest core for it, its configuration writes, and two samples (the
    second sparser)."""
    image = map_graph(g)
    params = core_params_for(image, timesteps=T, counter_bits=16)
    writes = config_writes(image, params, T)
    lo, hi = g.input.value_range
    x = rng.integers(lo, hi + 1, size=(2, g.input.size))
    x[1, rng.random(g.input.size) < 0.5] = 0
    return image, params, writes, x


@pytest.mark.parametrize("readout, signed", [(Readout.MEMBRANE, True),
                                             (Readout.SPIKE_COUNT, False)])
def test_board_matches_reference_and_model(readout, signed, seed):
    rng = np.random.default_rng(seed)
    T = 2
    g = random_graph(rng, max_in=4, max_size=4, max_hidden=1, timesteps=T, readout=readout)
    while g.input.signed != signed:         # negative input tokens on one of the two runs
        g = random_graph(rng, max_in=4, max_size=4, max_hidden=1, timesteps=T, readout=readout)
    image, params, writes, x = _network_and_samples(rng, g, T)
    ref = ref_run(g, x, T)
    model = CoreModel(params).run(image, x, T)
    board, client = sim_client(params, clk_hz=CLK_HZ)
    got = client.run_samples(writes, x, T)
    assert len(got) == len(x)
    v_ref = np.concatenate(ref.v_final, axis=1)
    for b, res in enumerate(got):
        assert res["events"] == ref_events(ref, b, T) == [list(e) for e in model.events[b]]
        assert res["membranes"] == v_ref[b].tolist() == model.v_final[b].tolist()
        assert res["prediction"] == int(ref.prediction[b])
        cnt = res["counters"]
        assert cnt[Counter.ACTIVE] == int(model.cycles[b])
        assert cnt[Counter.SYNOPS] == int(model.synops[b]) == int(ref.synops[b])
        assert cnt[Counter.TIMESTEP] == T
        assert cnt[Counter.SPIKES:] == [0] + ref.spike_counts[b].tolist()
        assert cnt[Counter.SPIKES:] == model.spike_counts[b].tolist()
        # The UART's backpressure and the token replay only add waiting cycles.
        assert cnt[Counter.TOTAL] >= int(model.cycles[b]) + model.clear_cycles
    assert board.framing_errors == 0


def _config_records(board, record_bytes):
    """CONFIG records the board was sent, read off the bytes that went on the line."""
    frames = FrameParser().feed(bytes(board.sent))
    return sum(len(payload) // record_bytes for code, payload in frames if code == Cmd.CONFIG)


def test_built_in_network_runs_without_configuration_and_after_a_reset(seed):
    """HostTop(network=writes), as snnc build makes it: samples run over the UART byte protocol
    with no CONFIG frame and equal the cycle model (the comparison snnc run-board makes); after
    the registers are overwritten and a reset interrupts a run, they equal it again."""
    from snnc.fpga.run import board_mismatches
    rng = np.random.default_rng(seed)
    T = 2
    g = random_graph(rng, max_in=4, max_size=3, max_hidden=1, residual=True, timesteps=T)
    image, params, writes, x = _network_and_samples(rng, g, T)
    model = CoreModel(params).run(image, x, T)
    board = SimBoard(params, baud=BAUD, clk_hz=FAST_CLK_HZ, network=writes)
    client = BoardClient(board, baud=BAUD, timeout=TIMEOUT, quiet=2e-4)
    record = board.top.layout.record_bytes

    def mismatches(got):
        return [board_mismatches(model, b, res) for b, res in enumerate(got)]

    assert mismatches(client.run_samples(writes, x, T, load=[])) == [[], []]
    assert _config_records(board, record) == 0
    # The host overwrites a register (one population fewer): the runs differ ...
    client.configure([(CfgSel.GLOBAL, 0, image.n_pops - 1)])
    assert mismatches(client.run_samples(writes, x[:1], T, load=[])) != [[]]
    # ... a reset in the middle of a run returns the registers to the built-in network.
    board.write(encode_frame(Cmd.RUN, T.to_bytes(2, "little")))
    # The ACK (6 bytes) and the first byte of an EVENT or TICK frame: the core is running.
    assert len(board.read(7, 2e-3)) == 7
    assert board.framing_errors == 0
    board.reset()
    client.resync()
    # The reset can cut the byte on the line; its frame is the only malformed one (a start
    # bit cut to less than half a bit time reads as a frame without a start bit).
    cut = board.framing_errors
    assert cut <= 1
    assert mismatches(client.run_samples(writes, x, T, load=[])) == [[], []]
    assert _config_records(board, record) == 1
    assert board.framing_errors == cut


SMALL = CoreParams(max_neurons=4, max_sources=4, max_synapses=8, max_pops=3, max_pop_size=4,
                   v_bits=12, strength_bits=3)


def test_info_and_errors_for_bad_commands():
    board, client = sim_client(SMALL, retries=0)
    info = client.info()
    assert (info["max_pops"], info["v_bits"], info["strength_bits"], info["max_tokens"]) == \
        (3, 12, 3, 4)
    with pytest.raises(BoardError, match="does not know the command") as e:
        client.command(0x7F)
    assert e.value.code == Err.UNKNOWN_COMMAND
    with pytest.raises(BoardError) as e:
        client.command(Cmd.READ, b"\x00\x00")
    assert e.value.code == Err.BAD_LENGTH
    with pytest.raises(BoardError) as e:
        client.command(Cmd.RUN, (0).to_bytes(2, "little"))
    assert e.value.code == Err.BAD_ARGUMENT
    with pytest.raises(BoardError) as e:                       # five tokens, the board holds 4
        client.command(Cmd.TOKENS, bytes(20))
    assert e.value.code == Err.BAD_LENGTH
    with pytest.raises(BoardError) as e:                       # not a whole number of tokens
        client.command(Cmd.TOKENS, bytes(6))
    assert e.value.code == Err.BAD_LENGTH
    with pytest.raises(BoardError, match="RUN without input tokens") as e:
        client.run(1)
    assert e.value.code == Err.NO_TOKENS
    assert client.read_counters() == [0] * 7                   # still answering


def test_corrupted_byte_is_detected_then_the_client_recovers():
    board, client = sim_client(SMALL, retries=0)
    client.info()
    board.flip(byte=6, bit=2)                                  # inside the payload
    with pytest.raises(BoardError, match="bad CRC") as e:
        client.load_tokens([0, 3, 0, 0])
    assert e.value.code == Err.BAD_CRC
    # The failed frame overwrote the token buffer: the board refuses to run on it.
    with pytest.raises(BoardError) as e:
        client.run(1)
    assert e.value.code == Err.NO_TOKENS
    assert client.load_tokens([0, 3, 0, 0]) == 1               # the next command works
    # With retries the client resends on its own; a corrupted length is caught too.
    client.retries = 1
    board.flip(byte=2, bit=7)
    assert client.load_tokens([1, 0, 2, 0]) == 2
    sent = FrameParser().feed(bytes(board.sent))
    assert sum(code is None for code, _ in sent) >= 1          # the board did see a bad frame


def test_corrupted_answer_is_detected():
    board, client = sim_client(SMALL, retries=0)
    info = client.command(Cmd.INFO)
    board.flip_answer(byte=8, bit=4)                           # inside the INFO answer's payload
    with pytest.raises(BoardError, match="corrupted answer from the board"):
        client.command(Cmd.INFO)
    client.resync()
    assert client.command(Cmd.INFO) == info
    client.retries = 1                                         # resent on its own
    board.flip_answer(byte=1, bit=0)
    assert client.command(Cmd.INFO) == info


def test_dropped_byte_times_out_with_a_clear_error():
    board, client = sim_client(SMALL, retries=0)
    client.info()
    # A byte lost on the way to the board: it times out on the frame and says so.
    board.drop(4)
    with pytest.raises(BoardError, match="a byte was lost") as e:
        client.load_tokens([0, 5, 0, 0])
    assert e.value.code == Err.TIMEOUT
    assert client.load_tokens([0, 5, 0, 0]) == 1
    # A byte lost on the way back: the client times out in the middle of the answer.
    board.drop_answer(7)
    with pytest.raises(BoardTimeout, match="answer stopped after .* a byte was lost"):
        client.command(Cmd.INFO)
    client.resync()
    assert client.read_counters()[Counter.TIMESTEP] == 0


class _Silent:
    def write(self, data):
        pass

    def read(self, n, timeout):
        return b""


def test_no_answer_names_the_likely_causes():
    client = BoardClient(_Silent(), retries=0)
    with pytest.raises(BoardTimeout, match=r"no answer from the board within 2 s: is it "
                                           r"programmed and connected at 115200 baud\?"):
        client.info()


def test_open_serial_without_pyserial(monkeypatch):
    monkeypatch.setitem(sys.modules, "serial", None)
    with pytest.raises(ImportError, match="pip install pyserial"):
        open_serial("/dev/ttyUSB0")


def test_protocol_crc_and_framing():
    assert crc16(b"123456789") == 0x29B1                      # CRC-16/CCITT-FALSE check value
    f = encode_frame(Cmd.CONFIG, bytes(range(10)))
    assert f[:4] == bytes([0xA5, 0x02, 10, 0]) and crc16(f[1:]) == 0
    parser = FrameParser()
    assert parser.feed(b"\x00\x13" + f[:7]) == []
    assert parser.feed(f[7:] + f) == [(Cmd.CONFIG, bytes(range(10)))] * 2
    assert parser.skipped == 2


def test_example_exchange_in_the_docs():
    # docs/protocol.md, "Example exchange"
    assert encode_frame(Cmd.TOKENS, bytes.fromhex("0100030004 00feff")) == \
        bytes.fromhex("a5 03 0800 0100 0300 0400 feff 8b42")
    assert encode_frame(Resp.ACK) == bytes.fromhex("a5000000cc9c")
    assert encode_frame(Cmd.RUN, b"\x02\x00") == bytes.fromhex("a504020002001300")
    assert encode_frame(Resp.EVENT, b"\x01\x00\x00\x01") == \
        bytes.fromhex("a5 81 0400 01 0000 01 8262")
    assert encode_frame(Resp.TICK) == bytes.fromhex("a582000099a6")


def test_bytes_sent_during_a_run_are_reported_busy(seed):
    rng = np.random.default_rng(seed)
    T = 2
    g = random_graph(rng, max_in=2, max_size=2, max_hidden=0, timesteps=T)
    image = map_graph(g)
    params = core_params_for(image, timesteps=T, counter_bits=16)
    board, client = sim_client(params, retries=0)
    client.configure(config_writes(image, params, T))
    client.load_tokens(np.ones(g.input.size, dtype=np.int64))
    # The host does not wait for DONE before its next command: the board discards it ...
    board.write(encode_frame(Cmd.RUN, T.to_bytes(2, "little")) + encode_frame(Cmd.INFO))
    assert client._read_frame()[0] == Resp.ACK
    events, counters = client._collect_run()
    assert counters[Counter.TIMESTEP] == T
    assert events == [list(e) for e in CoreModel(params).run(image, np.ones((1, g.input.size),
                                                                            np.int64), T).events[0]]
    # ... and says so once it listens again; then it answers normally.
    code, payload = client._read_frame()
    assert (code, payload) == (Err.BUSY, b"\x00")
    assert client.command(Cmd.INFO)[0] == 1


def test_host_top_parameters():
    from snnc.fpga.top import HostTop
    top = HostTop(SMALL, clk_hz=12_000_000)
    assert top.divisor == 104 and top.max_tokens == SMALL.max_sources
    assert top.layout.max_payload == max(4 * top.max_tokens, 16 * top.layout.record_bytes)
    assert set(top.signature.members) == {"rx", "tx"}
    Fragment.get(top, None)                                    # elaborates without a platform
    with pytest.raises(TypeError, match="expected CoreParams"):
        HostTop({"max_neurons": 4}, clk_hz=12_000_000)
    with pytest.raises(ValueError, match="at least 4 clock cycles per bit"):
        HostTop(SMALL, clk_hz=400_000)
    with pytest.raises(ValueError, match="max_tokens must be an int in 1..16383"):
        HostTop(SMALL, clk_hz=12_000_000, max_tokens=0)
