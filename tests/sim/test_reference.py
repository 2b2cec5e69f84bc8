"""The reference model: golden vectors, contract invariants (hypothesis), input checks."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from snnc.ir import Dense, Graph, InputPopulation, Population
from snnc.sim.reference import neuron_step, run
from snnc.testing import random_graph, random_inputs


def hand_graph(T=3):
    return Graph(input=InputPopulation("in", (3,), False),
                 populations=(Population("h", 2, np.array([0, 1]), 3, 2, -20, 20),
                              Population("o", 2, np.array([0, 0]), 1, 1, -100, 100, False)),
                 projections=(Dense(0, 1, np.array([[1, 2, 0], [0, -1, 3]]), 4),
                              Dense(1, 2, np.array([[1, -1], [2, 1]]), 4)),
                 timesteps=T)


def test_golden_hand_network():
    # x = (1, 2, 3): hidden currents (5, 8) per step (8 includes bias 1), theta 3, s_max 2.
    # h0: V 5 -> s1 V2; 7 -> s2 V1; 6 -> s2 V0.   h1: 8 -> s2 V2; 10 -> s2 V4; 12 -> s2 V6.
    # readout: t0 (1,2) -> (-1, 4); t1, t2 (2,2) -> (0, 6) each: final (-1, 16).
    r = run(hand_graph(), np.array([[1, 2, 3], [0, 0, 0]]))
    assert r.spikes[0][:, 0].tolist() == [[1, 2], [2, 2], [2, 2]]
    assert r.spikes[0][:, 1].tolist() == [[0, 0], [0, 0], [0, 1]]   # bias 1 alone: 1, 2, 3
    assert r.v_final[0].tolist() == [[0, 6], [0, 0]]
    assert r.v_final[1].tolist() == [[-1, 16], [-1, 1]]
    assert r.prediction.tolist() == [1, 1]
    # synops: inputs (1, 1, 2 nonzero fan-outs) = 4 per step; spikes reach 2 weights each.
    assert r.synops.tolist() == [3 * 4 + 6 * 2, 2]
    assert r.spike_counts.tolist() == [[6, 0], [1, 0]]
    assert r.spike_strength.tolist() == [[11, 0], [1, 0]]


def test_neuron_step_golden():
    s, v = neuron_step(np.array([9, 10, 2, -70, 100]), 3, 2, -50, 50, True)
    assert s.tolist() == [2, 2, 0, 0, 2] and v.tolist() == [3, 4, 2, -50, 50]


def test_input_checks():
    g = hand_graph()
    with pytest.raises(ValueError, match="expects 3"):
        run(g, np.zeros((1, 4), dtype=np.int64))
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        run(g, np.array([[256, 0, 0]]))
    with pytest.raises(TypeError, match="integers"):
        run(g, np.zeros((1, 3)))


def scalar_update(pop, v):
    """The per-timestep neuron update, one neuron at a time, in place on ``v``; returns spikes."""
    spikes = []
    for j in range(pop.size):
        u = v[j] + int(pop.bias[j])
        s = min(u // pop.theta, pop.s_max) if pop.spiking and u >= pop.theta else 0
        v[j] = min(max(u - s * pop.theta, pop.v_min), pop.v_max)
        spikes.append(s)
    return spikes


def _event_driven(graph, x, T, rng):
    """A scalar, event-by-event implementation that accumulates events in a random order."""
    V = [np.zeros(p.size, dtype=object) for p in graph.populations]
    for _ in range(T):
        out = {0: [int(v) for v in x]}
        for k, pop in enumerate(graph.populations, start=1):
            events = [(proj, i, s) for proj in graph.incoming(k)
                      for i, s in enumerate(out[proj.src]) if s]
            rng.shuffle(events)
            for proj, i, s in events:
                for j in range(pop.size):
                    V[k - 1][j] += int(proj.weights[j, i]) * s
            out[k] = scalar_update(pop, V[k - 1])
    return [np.array(v, dtype=np.int64) for v in V]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1))
def test_order_independence(s):
    rng = np.random.default_rng(s)
    g = random_graph(rng, max_in=6, max_size=6, max_hidden=2, residual=True)
    x = random_inputs(rng, g, 1)[0]
    ref = run(g, x[None], g.timesteps)
    for trial in range(2):
        got = _event_driven(g, x, g.timesteps, np.random.default_rng([s, trial]))
        for a, b in zip(got, ref.v_final):
            assert np.array_equal(a, b[0])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_conservation_without_clamps(s):
    """input in = (V_final - V_0) + theta * total strength, when no clamp is hit."""
    rng = np.random.default_rng(s)
    g = random_graph(rng, max_in=8, max_size=8, max_hidden=2)
    big = 10**12
    g = g.replace(populations=tuple(dataclasses.replace(p, v_min=-big, v_max=big)
                                    for p in g.populations))
    x = random_inputs(rng, g, 4)
    r = run(g, x)
    src = {0: np.broadcast_to(x, (g.timesteps,) + x.shape)}
    for k, pop in enumerate(g.populations, start=1):
        current = sum(np.einsum("tbi,ji->tbj", src[p.src], p.weights) for p in g.incoming(k))
        total_in = current.sum(axis=0) + g.timesteps * pop.bias
        strength = r.spikes[k - 1].sum(axis=0)
        assert np.array_equal(total_in, r.v_final[k - 1] + pop.theta * strength)
        src[k] = r.spikes[k - 1]


def test_spikes_never_exceed_s_max_and_clamps_hold(seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        g = random_graph(rng)
        r = run(g, random_inputs(rng, g, 5))
        for pop, s, v in zip(g.populations, r.spikes, r.v_final):
            assert s.min() >= 0 and s.max() <= pop.s_max
            assert pop.v_min <= v.min() and v.max() <= pop.v_max


def _same(a, b):
    for f in ("prediction", "synops", "input_events", "spike_counts", "spike_strength"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
        assert getattr(a, f).dtype == np.int64, f
    for u, v in zip(a.spikes + a.v_final, b.spikes + b.v_final):
        assert np.array_equal(u, v) and u.dtype == np.int64


def test_narrow_arithmetic_equals_int64_on_random_networks(seed):
    """float32/float64 where the bounds allow it, the input's contribution once, synaptic
    operations counted at the end: the same results as plain int64, field by field."""
    from snnc.testing import random_conv_graph
    rng = np.random.default_rng(seed)
    for i in range(30):
        g = (random_conv_graph(rng, max_hw=6, timesteps=int(rng.integers(1, 4))) if i % 3 == 1
             else random_graph(rng, residual=i % 3 == 2, timesteps=int(rng.integers(1, 5))))
        x = random_inputs(rng, g, 4)
        _same(run(g, x), run(g, x, arithmetic="int64"))


@pytest.mark.parametrize("magnitude, dtype", [(1 << 23, np.float32), ((1 << 24) + 1, np.float64),
                                              ((1 << 53) + 1, None)])
def test_each_population_takes_the_narrowest_exact_arithmetic(magnitude, dtype):
    """A hidden population whose input reaches ``magnitude`` in one timestep and whose state
    clamps at half of it: float32 only while every value stays below 2**24 (2**24 + 1 has no
    float32), float64 below 2**53, int64 beyond; the results equal int64's either way."""
    from snnc.sim.reference import _layer_plan
    w = magnitude // 255 + 1
    lim = magnitude // 2
    g = Graph(input=InputPopulation("in", (2,), False),
              populations=(Population("h", 2, np.array([0, 1]), 3, 15, -lim, lim),
                           Population("o", 1, np.array([0]), 1, 1, -(1 << 62), 1 << 62, False)),
              projections=(Dense(0, 1, np.array([[w, 0], [w, -1]]), 8),
                           Dense(1, 2, np.array([[1, -1]]), 8)),
              timesteps=3)
    x = np.array([[255, 1], [254, 255], [1, 0]])
    assert _layer_plan(g, 1)[0] is dtype
    _same(run(g, x), run(g, x, arithmetic="int64"))


def test_arithmetic_must_be_named():
    with pytest.raises(ValueError, match="arithmetic must be 'narrow' or 'int64'"):
        run(hand_graph(), np.array([[1, 2, 3]]), arithmetic="float16")


def test_batch_limit_shrinks_with_timesteps_and_never_reaches_zero():
    from snnc.ir import MAX_TIMESTEPS
    from snnc.sim.reference import BATCH_BYTES, batch_limit
    g = random_graph(np.random.default_rng(3))
    neurons = g.input.size + sum(p.size for p in g.populations)
    assert batch_limit(g, 1) == BATCH_BYTES // (48 * neurons)
    limits = [batch_limit(g, T) for T in (1, 4, 64, 1024, MAX_TIMESTEPS)]
    assert limits == sorted(limits, reverse=True) and limits[-1] >= 1
    assert all(48 * T * neurons * b <= BATCH_BYTES or b == 1
               for T, b in zip((1, 4, 64, 1024, MAX_TIMESTEPS), limits))
