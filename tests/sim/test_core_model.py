"""The cycle-accurate twin against the reference (results) and hand-counted cycles."""

import numpy as np
import pytest

from snnc.hw.mapping import map_graph
from snnc.hw.params import CoreParams, TIMING
from snnc.sim.core import CoreModel, unpack_weights
from snnc.sim.reference import run as ref_run
from snnc.ir import Readout
from snnc.testing import random_graph, random_inputs

BIG = CoreParams(max_neurons=512, max_sources=512, max_synapses=1 << 14, max_pops=8,
                 max_pop_size=64, v_bits=40)


def test_unpack_golden():
    # 2-bit lanes of 0b11_01_00_10 = -1, 1, 0, -2 read from lane 3 down to lane 0.
    assert unpack_weights(np.array([0b11010010]), 0, 4, 2).tolist() == [-2, 0, 1, -1]
    assert unpack_weights(np.array([0x9F]), 0, 2, 1).tolist() == [-1, -7]
    assert unpack_weights(np.array([0x80, 0x7F]), 0, 2, 0).tolist() == [-128, 127]


def test_model_matches_reference_on_random_networks(seed):
    rng = np.random.default_rng(seed)
    for case in range(60):
        g = random_graph(rng, max_in=16, max_size=16, max_hidden=3, residual=case % 3 == 0,
                         readout=Readout.SPIKE_COUNT if case % 5 == 1 else Readout.MEMBRANE)
        x = random_inputs(rng, g, 4)
        ref = ref_run(g, x)
        m = CoreModel(BIG).run(map_graph(g), x, g.timesteps)
        assert np.array_equal(m.v_final, np.concatenate(ref.v_final, axis=1))
        assert np.array_equal(m.synops, ref.synops)
        assert np.array_equal(m.spike_counts[:, 1:], ref.spike_counts)
        for a, b in zip(m.spikes, ref.spikes):
            assert np.array_equal(a, b)


def test_cycle_formula_by_hand():
    from tests.sim.test_reference import hand_graph
    g = hand_graph()
    p = CoreParams(max_neurons=8, max_sources=8, max_synapses=16, strength_bits=2)
    m = CoreModel(p).run(map_graph(g), np.array([[1, 2, 3]]), 3)
    # inputs: fan-outs (1, 1, 2) -> 2 + 1 + 1 + 2 = 6 (each event max(fan-out, 1), the phase 2);
    # sweeps 2 * (4 + 2 + 5) = 22 (drain 4, size 2, sweep latency: read 1 + neuron unit
    # (input, 2 strength bits, output)); hidden spikes per step: two, fan-out 2 each ->
    # 3 + 2 * max(2, 2) = 7; eot 1.
    assert m.cycles_per_timestep.tolist() == [[36, 36, 36]]
    assert m.cycles.tolist() == [108]
    assert (TIMING.input_event, TIMING.input_phase, TIMING.spike_event, TIMING.spike_phase,
            TIMING.drain, p.sweep_latency) == (1, 2, 2, 3, 4, 5)


def test_model_rejects_network_that_does_not_fit():
    from snnc.hw.mapping import MappingError
    from tests.sim.test_reference import hand_graph
    with pytest.raises(MappingError, match="neurons: the network needs 4, the core holds 2"):
        CoreModel(CoreParams(max_neurons=2)).run(map_graph(hand_graph()), np.zeros((1, 3), np.int64), 1)


def test_occupancy_by_hand():
    from tests.sim.test_reference import hand_graph
    p = CoreParams(max_neurons=8, max_sources=8, max_synapses=16, strength_bits=2)
    m = CoreModel(p).run(map_graph(hand_graph()), np.array([[1, 2, 3]]), 3)
    occ = m.occupancy(0)
    # 24 synops (4 per step from inputs, 4 from hidden spikes) over 108 cycles; 4 neurons x 3 steps.
    assert occ == {"active_cycles": 108, "synapse_pipeline": 24 / 108, "neuron_unit": 12 / 108,
                   "spike_buffer_high_water": [2, 0]}
