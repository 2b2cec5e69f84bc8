"""NeuronUnit (Amaranth simulation) against its twin NeuronModel, bit for bit."""

import random

import pytest
from amaranth.sim import Simulator

from snnc.hw.neuron import NeuronUnit
from snnc.hw.params import NeuronParams
from snnc.sim.neuron import NeuronModel


def test_model_golden_vectors():
    m = NeuronModel(NeuronParams(v_bits=16, strength_bits=4))
    # (u, theta, s_max, v_min, v_max, spiking) -> (s, v), worked out by hand
    cases = [
        ((9, 3, 15, -50, 50, True), (3, 0)),     # three wraps, nothing left
        ((10, 3, 15, -50, 50, True), (3, 1)),    # remainder stays (reset by subtraction)
        ((10, 3, 2, -50, 50, True), (2, 4)),     # capped at s_max, the excess carries
        ((2, 3, 15, -50, 50, True), (0, 2)),     # below threshold
        ((-70, 3, 15, -50, 50, True), (0, -50)),  # clamped at v_min
        ((100, 3, 1, -50, 50, True), (1, 50)),   # binary spike, clamped at v_max
        ((7, 7, 1, -50, 50, True), (1, 0)),      # exactly theta
        ((40, 3, 15, -50, 50, False), (0, 40)),  # readout integrator never spikes
        ((100, 5, 15, -50, 60, True), (15, 25)),  # 100 // 5 = 20 > 15
    ]
    for args, want in cases:
        assert m.update(*args) == want, args


def test_model_rejects_bad_values():
    m = NeuronModel(NeuronParams(v_bits=8, strength_bits=2))
    with pytest.raises(ValueError, match="s_max"):
        m.update(1, 1, 4, -1, 1)
    with pytest.raises(ValueError, match="theta"):
        m.update(1, 0, 1, -1, 1)
    with pytest.raises(ValueError, match="fit"):
        m.update(200, 1, 1, -1, 1)
    with pytest.raises(TypeError):
        NeuronModel(None)


def rtl_run(params, stimulus, stall_prob, seed):
    """Feed values ``u`` grouped per parameter set (theta, smax, vmin, vmax, spiking, gate)."""
    dut = NeuronUnit(params, tag_bits=16)
    out = []
    rng = random.Random(seed)

    async def bench(ctx):
        for (theta, smax, vmin, vmax, spiking, gate), us in stimulus:
            ctx.set(dut.theta, theta)
            ctx.set(dut.smax, smax)
            ctx.set(dut.smax_theta, smax * theta)
            ctx.set(dut.vmin, vmin)
            ctx.set(dut.vmax, vmax)
            ctx.set(dut.spiking, spiking)
            ctx.set(dut.gate, gate)
            sent = 0
            got = []
            cycles = 0
            while len(got) < len(us):
                en = rng.random() >= stall_prob
                ctx.set(dut.en, en)
                if sent < len(us) and rng.random() < 0.8:
                    ctx.set(dut.i_valid, 1)
                    ctx.set(dut.i_u, us[sent])
                    ctx.set(dut.i_tag, sent)
                    if en:
                        sent += 1
                else:
                    ctx.set(dut.i_valid, 0)
                await ctx.tick()
                if ctx.get(dut.o_valid) and en:
                    got.append((ctx.get(dut.o_tag), ctx.get(dut.o_s), ctx.get(dut.o_v)))
                cycles += 1
                assert cycles < 100 * (len(us) + 10), "pipeline lost a value"
            ctx.set(dut.i_valid, 0)
            # flush so the next parameter set starts with an empty pipeline
            ctx.set(dut.en, 1)
            for _ in range(params.latency + 1):
                await ctx.tick()
            out.append(got)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return out


@pytest.mark.parametrize("v_bits,strength_bits", [(12, 1), (16, 4), (24, 3)])
def test_unit_matches_model(seed, v_bits, strength_bits):
    params = NeuronParams(v_bits=v_bits, strength_bits=strength_bits)
    model = NeuronModel(params)
    rng = random.Random(seed)
    lim = (1 << (v_bits - 1)) - 1
    stimulus = []
    for _ in range(6):
        theta = rng.choice([1, 2, 3, 7, 8, 64, rng.randrange(1, lim // 64)])
        smax = rng.randrange(1, params.max_strength + 1)
        vmin = -rng.randrange(0, lim // 2)
        vmax = rng.randrange(theta, lim // 2)
        spiking = rng.random() < 0.8
        gate = rng.random() < 0.25
        us = [rng.choice([rng.randrange(-lim, lim), rng.randrange(-3 * theta, 20 * theta),
                          theta * rng.randrange(0, 17)]) for _ in range(40)]
        us = [max(-lim, min(lim, u)) for u in us]
        if gate:   # packed max-pool gate states are non-negative
            us = [abs(u) for u in us]
        stimulus.append(((theta, smax, vmin, vmax, spiking, gate), us))
    got = rtl_run(params, stimulus, stall_prob=0.3, seed=seed)
    for ((theta, smax, vmin, vmax, spiking, gate), us), outs in zip(stimulus, got):
        want = [(i, *model.update(u, theta, smax, vmin, vmax, spiking, gate)) for i, u in enumerate(us)]
        assert outs == want
