import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from snnc.fpga.uart import UARTRx, UARTTx, uart_divisor
from snnc.sim.uart import LineDecoder, frame_bits


def rtl_loopback(divisor, data, gaps):
    """Bytes through UARTTx -> line -> UARTRx; also decodes the line with the twin model."""
    m = Module()
    m.submodules.tx = tx = UARTTx(divisor=divisor)
    m.submodules.rx = rx = UARTRx(divisor=divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    got, errors, model = [], [], LineDecoder(divisor)
    n_cycles = (len(data) * 10 + 4) * divisor + sum(gaps) + 20

    async def producer(ctx):
        for b, gap in zip(data, gaps):
            await ctx.tick().repeat(gap) if gap else None
            ctx.set(tx.data.payload, b)
            ctx.set(tx.data.valid, 1)
            await ctx.tick().until(tx.data.ready)
            ctx.set(tx.data.valid, 0)

    async def consumer(ctx):
        ctx.set(rx.data.ready, 1)
        for _ in range(n_cycles):
            _, _, valid, payload, err, line = await ctx.tick().sample(
                rx.data.valid, rx.data.payload, rx.error, tx.tx)
            if valid:
                got.append(payload)
            if err:
                errors.append(1)
            model.feed(line)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return got, errors, model


@pytest.mark.parametrize("divisor", [4, 5, 8, 13])
def test_bytes_round_trip(divisor, seed):
    rng = np.random.default_rng(seed)
    data = [0x00, 0xFF, 0xA5, 0x5A] + rng.integers(0, 256, size=12).tolist()
    gaps = rng.choice([0, 0, 1, 7, 3 * divisor], size=len(data)).tolist()
    got, errors, model = rtl_loopback(divisor, data, gaps)
    assert got == data
    assert errors == []
    assert model.bytes == data and model.errors == 0


def rtl_receive(divisor, levels_per_cycle):
    """Drive UARTRx's line with one level per clock cycle; return (bytes, error pulses)."""
    rx = UARTRx(divisor=divisor)
    got, errors = [], []

    async def bench(ctx):
        ctx.set(rx.data.ready, 1)
        for level in levels_per_cycle:
            ctx.set(rx.rx, level)
            _, _, valid, payload, err = await ctx.tick().sample(rx.data.valid, rx.data.payload,
                                                                rx.error)
            if valid:
                got.append(payload)
            errors.append(err)

    sim = Simulator(rx)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got, sum(errors)


def cycles(bits, divisor):
    return [b for b in bits for _ in range(divisor)]


@pytest.mark.parametrize("divisor", [4, 8, 11])
def test_missing_stop_bit_is_a_framing_error(divisor):
    # A frame whose stop bit is low, the line held low a while (a break), then a good frame.
    line = [1] * 5 + cycles(frame_bits(0x3C, stop=0), divisor) + [0] * (3 * divisor) + \
        [1] * (2 * divisor) + cycles(frame_bits(0xC3), divisor) + [1] * (2 * divisor)
    got, n_errors = rtl_receive(divisor, line)
    assert got == [0xC3]
    assert n_errors == 1
    model = LineDecoder(divisor)
    for level in line:
        model.feed(level)
    assert model.bytes == [0xC3] and model.errors == 1


@pytest.mark.parametrize("divisor", [4, 8, 16])
def test_false_start_bit_is_ignored(divisor):
    # A low glitch shorter than half a bit is not a start bit.
    glitch = [0] * max(1, (divisor - 1) // 2 - 1)
    line = [1] * 5 + glitch + [1] * (3 * divisor) + cycles(frame_bits(0x81), divisor) + \
        [1] * (2 * divisor)
    got, n_errors = rtl_receive(divisor, line)
    assert got == [0x81]
    assert n_errors == 0


def test_transmitter_line_matches_frame_bits():
    divisor = 6
    tx = UARTTx(divisor=divisor)
    levels = []

    async def bench(ctx):
        ctx.set(tx.data.payload, 0x96)
        ctx.set(tx.data.valid, 1)
        await ctx.tick()
        ctx.set(tx.data.valid, 0)
        for _ in range(11 * divisor):
            _, _, level = await ctx.tick().sample(tx.tx)
            levels.append(level)

    sim = Simulator(tx)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert levels[:10 * divisor] == cycles(frame_bits(0x96), divisor)
    assert levels[10 * divisor:] == [1] * divisor


def test_divisor_checks():
    assert uart_divisor(12_000_000, 115200) == 104
    with pytest.raises(ValueError, match="at least 4 clock cycles per bit"):
        uart_divisor(300_000, 115200)
    with pytest.raises(ValueError, match="divisor must be an int >= 4"):
        UARTRx(divisor=3)
    with pytest.raises(ValueError, match="baud must be a positive int"):
        uart_divisor(12_000_000, 0)
    assert issubclass(UARTTx, wiring.Component) and issubclass(UARTRx, wiring.Component)
