"""The membrane-bank skew a core with lanes gets: fewer conflicts, never more, same results."""

import numpy as np
import pytest

from snnc.compiler.banks import choose_bank_skew, static_stalls
from snnc.hw.mapping import core_params_for, map_graph
from snnc.ir import Conv, Dense, Graph, InputPopulation, Population
from snnc.sim.core import CoreModel
from snnc.sim.reference import run as ref_run
from snnc.testing import random_conv_graph, random_inputs


def conv_chain(c=4, hw=8, seed=0):
    """Two 3x3 convolutions on an 8x8 map: every plane (64) and row (8) a multiple of the
    lanes, so with the bank n % lanes a source's taps fall in at most 3 banks."""
    rng = np.random.default_rng(seed)
    n = c * hw * hw
    pops = (Population("c1", n, np.zeros(n, np.int64), 3, 3, -500, 500, shape=(c, hw, hw)),
            Population("c2", n, np.zeros(n, np.int64), 3, 3, -500, 500, shape=(c, hw, hw)),
            Population("o", 2, np.zeros(2, np.int64), 1, 1, -10**6, 10**6, False))
    projs = (Conv(0, 1, rng.integers(-7, 8, (c, 1, 3, 3)), 4, (1, 1), (1, 1)),
             Conv(1, 2, rng.integers(-7, 8, (c, c, 3, 3)), 4, (1, 1), (1, 1)),
             Dense(2, 3, rng.integers(-7, 8, (2, n)), 4))
    return Graph(InputPopulation("in", (1, hw, hw), False), pops, projs, timesteps=2)


@pytest.mark.parametrize("lanes", [2, 4, 8])
def test_the_skew_spreads_convolution_targets(lanes):
    g = conv_chain()
    k = choose_bank_skew(g, "class", lanes)
    plain, skewed = static_stalls(g, "class", lanes, 0), static_stalls(g, "class", lanes, k)
    assert k >= lanes.bit_length() - 1 and skewed < 0.75 * plain, (k, plain, skewed)


def test_one_lane_has_no_skew_and_the_choice_is_never_worse(seed):
    rng = np.random.default_rng(seed)
    g = random_conv_graph(rng, max_hw=6)
    assert choose_bank_skew(g, "class", 1) == 0
    for lanes in (2, 4, 8):
        k = choose_bank_skew(g, "class", lanes)
        assert static_stalls(g, "class", lanes, k) <= static_stalls(g, "class", lanes, 0)


def test_skewed_banks_keep_the_results(seed):
    """The twin on a skewed core computes the reference's membranes, and its stalls are
    what static_stalls counts per event."""
    g = conv_chain(seed=seed % 1000)
    x = random_inputs(np.random.default_rng(seed), g, 2)
    ref = ref_run(g, x)
    for lanes in (2, 4, 8):
        k = choose_bank_skew(g, "class", lanes)
        image = map_graph(g, "class", lanes, k)
        run = CoreModel(core_params_for(image, timesteps=2)).run(image, x, 2)
        assert np.array_equal(run.v_final, np.concatenate(ref.v_final, axis=1))
        assert np.array_equal(run.synops, ref.synops)
