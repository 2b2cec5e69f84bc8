"""The whole tile under the Amaranth simulator against its twin CoreModel and the reference.

Compared bit for bit: every output event (timestep, population, neuron, strength), every final
membrane, the synaptic-op and spike counters, and the ACTIVE cycle counter. Producers and
consumers insert random idle cycles and backpressure.
"""

import dataclasses
import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from snnc.hw.core import Core
from snnc.hw.mapping import config_writes, map_graph
from snnc.hw.params import CoreParams, Counter
from snnc.sim.core import CoreModel
from snnc.sim.reference import run as ref_run
from snnc.testing import draw_fitting, random_conv_graph, random_graph, random_inputs

PARAMS = CoreParams(max_neurons=200, max_sources=200, max_synapses=1024, max_pops=8,
                    max_pop_size=100, v_bits=32, strength_bits=4, max_convs=8, coord_bits=4,
                    pool_count_bits=12)


def to_signed(v, bits):
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def rtl_run(params, image, xs, T, *, seed, idle=0.3, stall=0.3, built_in=False,
            ram_records=False):
    """Run samples ``xs`` through the core; return per sample (events, V, counters).

    Three concurrent testbenches: the host (configuration, start, readback), an input producer
    with random idle cycles and an output consumer with random backpressure. With
    ``built_in``, the network is built into the core (``Core(params, network=...)``) and the
    host makes no configuration write.
    """
    writes = config_writes(image, params, T)
    dut = Core(params, network=writes if built_in else None, ram_records=ram_records)
    rng = random.Random(seed)
    results = []
    state = {"sample": -1, "produced": -1, "consumed": -1}
    events = [[] for _ in xs]

    async def host(ctx):
        for sel, addr, data in ([] if built_in else writes):
            ctx.set(dut.cfg_we, 1)
            ctx.set(dut.cfg_sel, sel)
            ctx.set(dut.cfg_addr, addr)
            ctx.set(dut.cfg_data, data)
            await ctx.tick()
        ctx.set(dut.cfg_we, 0)
        for b in range(len(xs)):
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            state["sample"] = b
            while state["produced"] < b or state["consumed"] < b or ctx.get(dut.busy):
                await ctx.tick()
            v = []
            ctx.set(dut.rb_sel, 0)
            for n in range(image.n_neurons):
                ctx.set(dut.rb_addr, n)
                await ctx.tick()
                v.append(to_signed(ctx.get(dut.rb_data), params.v_bits))
            counters = {}
            ctx.set(dut.rb_sel, 1)
            for name, a in [("active", Counter.ACTIVE), ("synops", Counter.SYNOPS),
                            ("timesteps", Counter.TIMESTEP)] + \
                    [(f"spikes{k}", Counter.SPIKES + k) for k in range(image.n_pops)]:
                ctx.set(dut.rb_addr, a)
                await ctx.tick()
                counters[name] = ctx.get(dut.rb_data)
            ctx.set(dut.rb_sel, 0)
            results.append((events[b], v, counters))

    async def produce(ctx):
        for b, x in enumerate(xs):
            while state["sample"] < b:
                await ctx.tick()
            for t in range(T):
                tokens = [(int(i), int(x[i]), 0) for i in np.flatnonzero(x)] + [(0, 0, 1)]
                for index, value, eot in tokens:
                    while rng.random() < idle:
                        await ctx.tick()
                    ctx.set(dut.inp.valid, 1)
                    ctx.set(dut.inp.payload, {"index": index, "value": value, "eot": eot})
                    await ctx.tick().until(dut.inp.ready)
                    ctx.set(dut.inp.valid, 0)
            state["produced"] = b

    async def consume(ctx):
        for b in range(len(xs)):
            while state["sample"] < b:
                await ctx.tick()
            t = 0
            while t < T:
                ready = rng.random() >= stall
                ctx.set(dut.out.ready, ready)
                _, _, valid, payload = await ctx.tick().sample(dut.out.valid, dut.out.payload)
                if ready and valid:
                    if payload.eot:
                        t += 1
                    else:
                        events[b].append((t, int(payload.pop), int(payload.index),
                                          int(payload.strength)))
            ctx.set(dut.out.ready, 0)
            state["consumed"] = b

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(host)
    sim.add_testbench(produce, background=True)
    sim.add_testbench(consume, background=True)
    sim.run()
    return results


def contract_state(image, params, n, word):
    """A membrane word read back from the core, as the contract states it (gate states unpacked)."""
    for pop in image.pops[1:]:
        if pop["GATE"] and pop["NBASE"] <= n < pop["NBASE"] + pop["SIZE"]:
            return (word & ((1 << params.v_bits) - 1)) >> params.strength_bits
    return word


def check_against_model(graph, xs, results, params=PARAMS, layout="class"):
    image = map_graph(graph, layout, params.lanes, params.bank_skew)
    model = CoreModel(params).run(image, xs, graph.timesteps)
    ref = ref_run(graph, xs)
    ref_v = np.concatenate(ref.v_final, axis=1)
    assert np.array_equal(model.v_final, ref_v)
    # A core that walks the input once does the input's synaptic operations once.
    in_per_t = (np.asarray(xs).reshape(len(xs), -1) != 0) @ CoreModel(params)._fanout(image, 0)[1]
    skipped = (graph.timesteps - 1) * in_per_t if params.input_once else 0
    assert np.array_equal(model.synops, ref.synops - skipped)
    for b, (events, v, counters) in enumerate(results):
        assert events == model.events[b], f"sample {b}: output events differ"
        v = [contract_state(image, params, n, a) for n, a in enumerate(v)]
        assert v == [int(a) for a in model.v_final[b]], f"sample {b}: membranes differ"
        assert counters["synops"] == model.synops[b]
        assert counters["timesteps"] == graph.timesteps
        for k in range(1, image.n_pops):
            assert counters[f"spikes{k}"] == model.spike_counts[b, k] == ref.spike_counts[b, k - 1]
        assert counters["active"] == model.cycles[b], f"sample {b}: cycle count differs"


def hand_network():
    """A 3-2-2 network whose spikes and membranes are worked out by hand."""
    from snnc.ir import Dense, Graph, InputPopulation, Population
    return Graph(input=InputPopulation("in", (3,), False),
                 populations=(Population("h", 2, np.array([0, 1]), 3, 2, -20, 20),
                              Population("o", 2, np.array([0, 0]), 1, 1, -100, 100, False)),
                 projections=(Dense(0, 1, np.array([[1, 2, 0], [0, -1, 3]]), 4),
                              Dense(1, 2, np.array([[1, -1], [2, 1]]), 4)),
                 timesteps=3)


def test_hand_network_golden():
    """A 3-2-2 network whose spikes and membranes are worked out by hand (see the reference tests)."""
    g = hand_network()
    xs = np.array([[1, 2, 3], [0, 0, 0]])
    results = rtl_run(PARAMS, map_graph(g), xs, 3, seed=1)
    assert results[0][0] == [(0, 1, 0, 1), (0, 1, 1, 2), (1, 1, 0, 2), (1, 1, 1, 2),
                             (2, 1, 0, 2), (2, 1, 1, 2)]
    assert results[0][1] == [0, 6, -1, 16]
    # Per timestep: the input phase 2 + max(1, 1) + max(1, 1) + max(2, 1) = 6 (the next event
    # is fetched while one is walked); sweeps 2*(4+2+7) (drain 4, size 2, sweep latency
    # 1 + (1 + 4 + 1)); the spike phase: two spikes of fan-out 2, 3 + 2*max(2, 2) = 7;
    # EOT 1 -> 6+26+7+1 = 40 (before the event front end: 47).
    assert results[0][2]["active"] == 3 * 40
    check_against_model(g, xs, results)


@pytest.mark.parametrize("case", range(6))
def test_random_networks(seed, case):
    rng = np.random.default_rng([seed, case])
    g = draw_fitting(rng, lambda r: random_graph(r, max_in=10, max_size=10, max_hidden=2,
                                                 timesteps=int(r.integers(1, 4))), PARAMS)
    xs = random_inputs(rng, g, 3)
    results = rtl_run(PARAMS, map_graph(g), xs, g.timesteps, seed=seed + case)
    check_against_model(g, xs, results)




@pytest.mark.parametrize("case", range(6))
def test_random_conv_networks(seed, case):
    """Conv taps listed by class (every source walks only landing taps) and, in two cases, by
    channel (border and stride-phase taps walked and dropped)."""
    layout = "channel" if case < 2 else "class"
    rng = np.random.default_rng([seed, case, 7])
    g = draw_fitting(rng, lambda r: random_conv_graph(r, max_hw=6, timesteps=int(r.integers(1, 3))),
                     PARAMS)
    xs = random_inputs(rng, g, 2)
    results = rtl_run(PARAMS, map_graph(g, layout), xs, g.timesteps, seed=seed + case)
    check_against_model(g, xs, results, layout=layout)


PARAMS_ONCE = dataclasses.replace(PARAMS, input_current_depth=PARAMS.max_neurons)


@pytest.mark.parametrize("case", range(6))
def test_input_walked_once(seed, case):
    """A core with an input-current memory walks the input in the first timestep only (into
    the memory) and adds it in every sweep: the same events, membranes and spike counts, the
    input's SOPs once, and the cycles of the twin (ACTIVE ==), with input gaps and output
    stalls; dense, residual and convolution networks."""
    rng = np.random.default_rng([seed, case, 13])
    make = ((lambda r: random_conv_graph(r, max_hw=6, timesteps=int(r.integers(2, 4))))
            if case % 2 else
            (lambda r: random_graph(r, max_in=10, max_size=10, max_hidden=2, residual=case == 2,
                                    timesteps=int(r.integers(2, 4)))))
    g = draw_fitting(rng, make, PARAMS_ONCE)
    xs = random_inputs(rng, g, 3)
    results = rtl_run(PARAMS_ONCE, map_graph(g), xs, g.timesteps, seed=seed + case)
    check_against_model(g, xs, results, params=PARAMS_ONCE)
    walked = CoreModel(PARAMS).run(map_graph(g), xs, g.timesteps)
    once = CoreModel(PARAMS_ONCE).run(map_graph(g), xs, g.timesteps)
    assert (once.cycles <= walked.cycles).all()


def test_input_walked_once_by_hand():
    """The 3-2-2 network of the golden test, input walked once: timestep 0 as before (40
    cycles); later timesteps consume the 3 tokens and the eot in 4 cycles instead of the
    input phase's 6 -> 38; SOPs: 4 input + 4 hidden at t=0, 4 hidden after (24 walked)."""
    g = hand_network()
    xs = np.array([[1, 2, 3], [0, 0, 0]])
    results = rtl_run(PARAMS_ONCE, map_graph(g), xs, 3, seed=1)
    assert results[0][1] == [0, 6, -1, 16]
    assert results[0][2]["active"] == 40 + 38 + 38
    assert results[0][2]["synops"] == (4 + 4) + 4 + 4
    check_against_model(g, xs, results, params=PARAMS_ONCE)


@pytest.mark.parametrize("lanes", [2, 4, 8])
@pytest.mark.parametrize("case", range(4))
def test_synapse_lanes(seed, lanes, case):
    """Cores with 2, 4 and 8 synapse lanes (banked target, weight, membrane and input-current
    memories) on dense, residual and convolution networks (class and channel lists), input
    walked every timestep and once, membrane banks by the neuron's low bits and skewed
    (``bank_skew``), with input gaps and output stalls: the events, membranes and counters of
    the reference, and the twin's cycles including its bank-conflict stalls (ACTIVE ==)."""
    rng = np.random.default_rng([seed, case, lanes, 17])
    lb = lanes.bit_length() - 1
    params = dataclasses.replace(PARAMS_ONCE if case >= 2 else PARAMS, lanes=lanes,
                                 bank_skew=[0, lb + 1, lb, lb + 2][case])
    layout = "channel" if case == 3 else "class"
    make = ((lambda r: random_conv_graph(r, max_hw=6, timesteps=int(r.integers(1, 3))))
            if case % 2 else
            (lambda r: random_graph(r, max_in=12, max_size=12, max_hidden=2, residual=case == 2,
                                    timesteps=int(r.integers(1, 4)))))
    g = draw_fitting(rng, make, params)
    image = map_graph(g, layout, lanes, params.bank_skew)
    xs = random_inputs(rng, g, 3)
    results = rtl_run(params, image, xs, g.timesteps, seed=seed + case)
    check_against_model(g, xs, results, params=params, layout=layout)


def test_bank_conflicts_cost_what_the_twin_says():
    """Two lanes, one input feeding neurons 0, 2 and 4, all in membrane bank 0: two issues,
    the first with two targets in bank 0 -> one stall cycle, which the twin counts and the
    RTL's ACTIVE counter shows (the input event costs 2 issues + 1 stall, as many cycles as at
    one lane)."""
    from snnc.ir import Dense, Graph, InputPopulation, Population
    g = Graph(input=InputPopulation("in", (1,), False),
              populations=(Population("h", 6, np.zeros(6, np.int64), 4, 3, -100, 100, False),),
              projections=(Dense(0, 1, np.array([[1], [0], [2], [0], [3], [0]]), 8),),
              timesteps=1)
    xs = np.array([[1]])
    one = CoreModel(PARAMS).run(map_graph(g), xs, 1)
    params = dataclasses.replace(PARAMS, lanes=2)
    model = CoreModel(params).run(map_graph(g, "class", 2), xs, 1)
    assert int(model.bank_stalls[0]) == 1 and int(one.bank_stalls[0]) == 0
    # the input event: 2 issues + 1 stall == 3 cycles at one lane; the sweep of the 6 neurons
    # (no spikes: the population integrates): 3 groups of 2 instead of 6 cycles
    assert int(model.cycles[0]) == int(one.cycles[0]) - 3
    results = rtl_run(params, map_graph(g, "class", 2), xs, 1, seed=3)
    assert results[0][2]["active"] == model.cycles[0]
    check_against_model(g, xs, results, params=params)


def test_lane_sweep_emits_one_spike_per_cycle():
    """Four lanes, a hidden population of 5 neurons that all spike at t=0 (strengths 1, 2, 3,
    1, 2) and feed one output: the sweep's groups are {0..3} (4 spikes: 3 extra cycles) and
    {4} (1 spike); the spikes leave in neuron order, and the RTL's ACTIVE counter equals the
    twin's: 2 groups + 3 instead of 5 sweep cycles."""
    from snnc.ir import Dense, Graph, InputPopulation, Population
    g = Graph(input=InputPopulation("in", (1,), False),
              populations=(Population("h", 5, np.zeros(5, np.int64), 2, 3, -100, 100),
                           Population("o", 1, np.zeros(1, np.int64), 1, 1, -100, 100, False)),
              projections=(Dense(0, 1, np.array([[2], [4], [6], [2], [4]]), 8),
                           Dense(1, 2, np.ones((1, 5), np.int64), 8)),
              timesteps=1)
    xs = np.array([[1]])
    params = dataclasses.replace(PARAMS, lanes=4)
    image = map_graph(g, "class", 4)
    model = CoreModel(params).run(image, xs, 1)
    assert int(model.sweep_stalls[0]) == 3
    assert model.events[0] == [(0, 1, 0, 1), (0, 1, 1, 2), (0, 1, 2, 3), (0, 1, 3, 1), (0, 1, 4, 2)]
    one = CoreModel(PARAMS).run(map_graph(g), xs, 1)
    # hidden sweep 2 + 3 instead of 5; output sweep 1 either way; the 5 spikes walk one entry
    # each (spike cost 2 either way); the input walks 5 entries in 2 issues instead of 5
    assert int(model.cycles[0]) == int(one.cycles[0]) - 3
    results = rtl_run(params, image, xs, 1, seed=5)
    assert results[0][2]["active"] == model.cycles[0]
    check_against_model(g, xs, results, params=params)


@pytest.mark.parametrize("case", range(8))
def test_random_networks_on_minimal_cores(seed, case):
    """Each network on the smallest core that holds it (as a bundle's core.v is sized), so
    every field width is as narrow as the mapping allows."""
    from snnc.hw.mapping import core_params_for
    rng = np.random.default_rng([seed, case, 11])
    g = (random_conv_graph(rng, max_hw=6, timesteps=int(rng.integers(1, 3))) if case % 2 else
         random_graph(rng, residual=case % 4 == 0, timesteps=int(rng.integers(1, 3))))
    image = map_graph(g)
    params = core_params_for(image, timesteps=g.timesteps)
    xs = random_inputs(rng, g, 2)
    results = rtl_run(params, image, xs, g.timesteps, seed=seed + case)
    check_against_model(g, xs, results, params=params)


@pytest.mark.parametrize("case", range(4))
def test_built_in_networks_run_without_configuration(seed, case):
    """Core(params, network=writes) on the smallest core: the memories and registers start
    with the network (every field as narrow as the mapping allows); no configuration write.
    Cases 2 and 3 have 4 synapse lanes: the built-in words go to their banks."""
    from snnc.hw.mapping import core_params_for
    rng = np.random.default_rng([seed, case, 13])
    g = (random_conv_graph(rng, max_hw=5, timesteps=2) if case % 2 else
         random_graph(rng, residual=True, timesteps=2))
    image = map_graph(g, lanes=4 if case >= 2 else 1)
    params = core_params_for(image, timesteps=g.timesteps)
    xs = random_inputs(rng, g, 2)
    results = rtl_run(params, image, xs, g.timesteps, seed=seed + case, built_in=True)
    check_against_model(g, xs, results, params=params)


@pytest.mark.parametrize("case", range(4))
def test_records_in_block_ram_keep_results_and_cycles(seed, case):
    """Core(..., ram_records=True): the population records in one block-RAM word each, read
    ahead of every population change, give the same events, membranes, counters and cycles as
    registers (the last configuration write lands right before ``start``, and outputs stall)."""
    from snnc.hw.mapping import core_params_for
    rng = np.random.default_rng([seed, case, 17])
    g = (random_conv_graph(rng, max_hw=5, timesteps=int(rng.integers(1, 3))) if case % 2 else
         random_graph(rng, residual=case == 2, timesteps=int(rng.integers(1, 4))))
    image = map_graph(g)
    params = core_params_for(image, timesteps=g.timesteps)
    xs = random_inputs(rng, g, 2)
    results = rtl_run(params, image, xs, g.timesteps, seed=seed + case, ram_records=True,
                      built_in=case == 3)
    check_against_model(g, xs, results, params=params)
