"""Generated Verilog of the core under cocotb + Verilator against the reference and cycle model.

One build serves every network: the core's capacity is a build parameter and each network's
memories are loaded at run time through the configuration port.
"""

import dataclasses

import numpy as np
import pytest
from amaranth.back import verilog

from snnc.hw.core import Core
from snnc.hw.params import CoreParams
from snnc.rtl.verify import run_networks
from snnc.ir import Readout
from snnc.testing import draw_fitting, random_conv_graph, random_graph, random_inputs

pytestmark = pytest.mark.verilator

PARAMS = CoreParams(max_neurons=1024, max_sources=1024, max_synapses=2048, max_pops=8,
                    max_pop_size=512, v_bits=32, strength_bits=4, max_convs=8, coord_bits=4,
                    pool_count_bits=12)
N_NETWORKS = 60
N_CONV_NETWORKS = 40


@pytest.fixture(scope="module")
def core_verilog():
    return verilog.convert(Core(PARAMS), name="snnc_core")


def regression_set(seed, n=N_NETWORKS, params=PARAMS):
    items = []
    for case in range(n):
        rng = np.random.default_rng([seed, case])
        g = draw_fitting(rng, lambda r: random_graph(
            r, max_in=12, max_size=12, max_hidden=2, bits=(8, 4, 2)[case % 3],
            max_strength=1 if case % 4 == 0 else 15, residual=case % 5 == 0,
            readout=Readout.SPIKE_COUNT if case % 7 == 3 else Readout.MEMBRANE), params)
        xs = random_inputs(rng, g, 3)
        items.append((g, xs, g.timesteps))
    return items


def conv_regression_set(seed, n=N_CONV_NETWORKS, params=PARAMS):
    items = []
    for case in range(n):
        rng = np.random.default_rng([seed, case, 3])
        g = draw_fitting(rng, lambda r: random_conv_graph(
            r, bits=(8, 4, 2)[case % 3], max_hw=7, max_strength=1 if case % 4 == 0 else 15,
            timesteps=int(r.integers(1, 4))), params)
        items.append((g, random_inputs(rng, g, 2), g.timesteps))
    return items


def coverage(items):
    c = {"bits": set(), "binary": 0, "graded": 0, "neg_w": 0, "neg_bias": 0, "pow2": 0,
         "other_theta": 0, "layers": set(), "empty_input": 0, "residual": 0, "spike_count": 0}
    for g, xs, _ in items:
        c["spike_count"] += g.readout is Readout.SPIKE_COUNT
        c["bits"] |= {p.bits for p in g.projections}
        c["layers"].add(len(g.populations))
        c["residual"] += any(p.dst - p.src > 1 for p in g.projections)
        c["neg_w"] += any((p.weights < 0).any() for p in g.projections)
        c["empty_input"] += int((np.abs(xs).sum(axis=1) == 0).sum())
        for p in g.populations:
            if p.spiking:
                c["binary" if p.s_max == 1 else "graded"] += 1
                c["pow2" if p.theta & (p.theta - 1) == 0 else "other_theta"] += 1
            c["neg_bias"] += bool((p.bias < 0).any())
    return c


def test_random_networks_bit_exact(simulator, core_verilog, seed):
    items = regression_set(seed)
    c = coverage(items)
    assert c["bits"] == {8, 4, 2} and c["layers"] == {1, 2, 3}
    assert min(c["binary"], c["graded"], c["neg_w"], c["neg_bias"], c["pow2"],
               c["other_theta"], c["empty_input"], c["residual"]) > 0, c
    out = run_networks(items, PARAMS, core_verilog, simulator=simulator, seed=seed,
                       idle=0.2, stall=0.2)
    failures = [f"network {i} sample {b}: {m}" for i, (_, mism, _) in enumerate(out)
                for b, ms in enumerate(mism) for m in ms]
    assert not failures, "\n".join(failures[:20])
    checked = sum(len(xs) for _, xs, _ in items)
    print(f"{len(items)} networks, {checked} samples bit-exact (events, membranes, counters, cycles)")


def test_random_conv_networks_bit_exact(simulator, core_verilog, seed):
    """Convolutions (kernels 1..5, strides 1..3, padding), spiking max-pool, residual blocks."""
    from snnc.ir import Conv, MaxPool
    items = conv_regression_set(seed)
    kinds = {type(p) for g, _, _ in items for p in g.projections}
    strides = {p.stride[0] for g, _, _ in items for p in g.projections if isinstance(p, Conv)}
    pads = {p.padding[0] for g, _, _ in items for p in g.projections if isinstance(p, Conv)}
    residual = sum(len(g.incoming(k)) > 1 for g, _, _ in items for k in range(1, g.n_pops))
    assert {Conv, MaxPool} <= kinds and len(strides) > 1 and len(pads) > 1 and residual > 0
    out = run_networks(items, PARAMS, core_verilog, simulator=simulator, seed=seed,
                       idle=0.2, stall=0.2)
    failures = [f"network {i} sample {b}: {m}" for i, (_, mism, _) in enumerate(out)
                for b, ms in enumerate(mism) for m in ms]
    assert not failures, "\n".join(failures[:20])


@pytest.mark.parametrize("sim,lanes,skew", [("verilator", 2, 0), ("icarus", 4, 4),
                                            ("verilator", 8, 3)])
def test_synapse_lanes_bit_exact(sim, lanes, skew, seed):
    """Cores with 2, 4 (input walked once, banks skewed by n >> 4) and 8 synapse lanes (banks
    skewed by n >> 3): dense and convolution networks with input gaps and output stalls, every
    event, membrane and counter, and ACTIVE == the twin's cycles with its bank-conflict
    stalls; some of the networks do stall."""
    from tests.rtl.conftest import require
    require(sim)
    params = dataclasses.replace(PARAMS, lanes=lanes, bank_skew=skew,
                                 input_current_depth=PARAMS.max_neurons if lanes == 4 else 0)
    v = verilog.convert(Core(params), name="snnc_core")
    items = regression_set(seed, 16, params) + conv_regression_set(seed, 10, params)
    out = run_networks(items, params, v, simulator=sim, seed=seed, idle=0.2, stall=0.2)
    failures = [f"network {i} sample {b}: {m}" for i, (_, mism, _) in enumerate(out)
                for b, ms in enumerate(mism) for m in ms]
    assert not failures, "\n".join(failures[:20])
    assert sum(int(model.bank_stalls.sum()) for model, _, _ in out) > 0


def test_extremes_bit_exact(simulator, core_verilog, seed):
    """Every neuron firing at S_max every timestep, and a silent network with no input at all."""
    from snnc.ir import verify
    rng = np.random.default_rng(seed)
    g = random_graph(rng, max_in=10, max_size=10, max_hidden=2, bits=8, max_strength=15)
    loud = g.replace(
        projections=tuple(dataclasses.replace(p, weights=np.abs(p.weights)) for p in g.projections),
        populations=tuple(dataclasses.replace(p, theta=1, s_max=15, bias=np.full(p.size, 20),
                                              v_min=0, v_max=10**6) for p in g.populations))
    silent = g.replace(populations=tuple(dataclasses.replace(p, bias=np.zeros(p.size, np.int64))
                                         for p in g.populations))
    verify(loud), verify(silent)
    hi = g.input.value_range[1]
    full = np.stack([np.full(g.input.size, hi), np.zeros(g.input.size, dtype=np.int64)])
    none = np.zeros((1, g.input.size), dtype=np.int64)
    out = run_networks([(loud, full, 4), (silent, none, 3)], PARAMS, core_verilog,
                       simulator=simulator, seed=seed, idle=0.0, stall=0.5)
    assert [m for _, m, _ in out] == [[[], []], [[]]]
    (m_loud, _, got_loud), (m_silent, _, got_silent) = out
    for spikes, pop in zip(m_loud.spikes, loud.populations):
        if pop.spiking:
            assert (spikes == 15).all()
    assert got_silent[0]["events"] == [] and not any(got_silent[0]["v"])


def test_mismatch_is_reported(verilator, core_verilog, seed):
    """The comparison can fail: a core loaded with one network, checked against another whose
    readout bias differs by one (its final membrane must then differ by T)."""
    from snnc.hw.mapping import map_graph
    from snnc.rtl.verify import compare_sample
    from snnc.sim.core import CoreModel
    rng = np.random.default_rng(seed)
    g = random_graph(rng, max_in=8, max_size=8, max_hidden=1, bits=8)
    *hidden, out = g.populations
    out = dataclasses.replace(out, v_min=-10**6, v_max=10**6)
    g = g.replace(populations=(*hidden, out))
    xs = random_inputs(rng, g, 1, empty_prob=0.0)
    [(_, mism, got)] = run_networks([(g, xs, 2)], PARAMS, core_verilog, simulator=verilator)
    assert mism == [[]]
    g2 = g.replace(populations=(*hidden, dataclasses.replace(out, bias=out.bias + 1)))
    other = CoreModel(PARAMS).run(map_graph(g2), xs, 2)
    msgs = compare_sample(g2, PARAMS, other, 0, got[0])
    assert len(msgs) == 1 and f"population {len(g.populations)} ('{out.name}') neuron 0" in msgs[0], msgs
    assert "expected" in msgs[0] and "got" in msgs[0]


def test_reset_mid_run_and_determinism(simulator, core_verilog, seed):
    """A reset in the middle of a run, then a reload: results equal a fresh run, bit for bit.

    The same seed (same stall pattern) gives the same wall-clock cycles too.
    """
    items = regression_set(seed, n=4)
    fresh = run_networks(items, PARAMS, core_verilog, simulator=simulator, seed=seed,
                         idle=0.3, stall=0.3)
    again = run_networks(items, PARAMS, core_verilog, simulator=simulator, seed=seed,
                         idle=0.3, stall=0.3)
    reset = run_networks(items, PARAMS, core_verilog, simulator=simulator, seed=seed + 1,
                         idle=0.3, stall=0.3, reset_after=37)
    for (_, m1, g1), (_, m2, g2), (_, m3, g3) in zip(fresh, again, reset):
        assert all(not m for m in m1 + m2 + m3)
        assert g1 == g2
        assert [s["events"] for s in g1] == [s["events"] for s in g3]
        assert [s["v"] for s in g1] == [s["v"] for s in g3]
