"""How convolution taps are listed (snnc.hw.convlists): every source walks exactly its landing
taps ("class"), or its channel's whole list ("channel"), and both compute the same network."""

import numpy as np
import pytest

from snnc.hw.convlists import conv_lists
from snnc.hw.mapping import core_params_for, map_graph
from snnc.ir import Conv, Graph, InputPopulation, Population
from snnc.sim.core import CoreModel
from snnc.sim.reference import run
from snnc.testing import random_conv_graph, random_inputs


def landing_taps(graph, k, ci, y, x):
    """Brute force: the (projection, co, ky, kx) of every nonzero tap of source (ci, y, x) that
    reaches an output neuron."""
    taps = set()
    for pi, p in enumerate(graph.outgoing(k)):
        _, ho, wo = graph.shape(p.dst)
        for co, ky, kx in zip(*np.nonzero(p.weights[:, ci])):
            ny, nx = y + p.padding[0] - ky, x + p.padding[1] - kx
            if (ny >= 0 and nx >= 0 and ny % p.stride[0] == 0 and nx % p.stride[1] == 0
                    and ny // p.stride[0] < ho and nx // p.stride[1] < wo):
                taps.add((pi, int(co), int(ky), int(kx)))
    return taps


def walked(lists, s):
    sl = slice(lists.start[s], lists.start[s] + lists.count[s])
    return [(int(a), int(b), int(c), int(d)) for a, b, c, d in
            zip(lists.proj[sl], lists.co[sl], lists.ky[sl], lists.kx[sl])]


def conv_sources(graph):
    return [k for k in range(graph.n_pops) if (k == 0 or graph.pop(k).spiking)
            and graph.outgoing(k) and all(isinstance(p, Conv) for p in graph.outgoing(k))]


def strided_graph(rng, stride, k, pad, hw, second=None):
    """One conv source feeding one or two convolutions (the second with its own geometry)."""
    c_in = 2
    inp = InputPopulation("in", (c_in, hw, hw), False)
    pops, projs = [], []
    for i, (s_, k_, p_) in enumerate([(stride, k, pad)] + ([second] if second else [])):
        ho = (hw + 2 * p_ - k_) // s_ + 1
        w = rng.integers(-7, 8, (2, c_in, k_, k_)) * (rng.random((2, c_in, k_, k_)) < 0.8)
        n = 2 * ho * ho
        pops.append(Population(f"c{i}", n, np.zeros(n, np.int64), 3, 3, -10**4, 10**4,
                               shape=(2, ho, ho)))
        projs.append(Conv(0, i + 1, w, 4, (s_, s_), (p_, p_)))
    return Graph(inp, tuple(pops), tuple(projs), timesteps=2)


def check_every_source_walks_its_landing_taps(graph):
    for k in conv_sources(graph):
        lists = conv_lists(graph, k, "class")
        C, H, W = graph.shape(k)
        for s in range(C * H * W):
            ci, y, x = s // (H * W), (s // W) % H, s % W
            got = walked(lists, s)
            assert len(got) == len(set(got)), (k, ci, y, x)
            assert set(got) == landing_taps(graph, k, ci, y, x), (k, ci, y, x)
        # "channel": every source walks all nonzero taps of its channel
        whole = conv_lists(graph, k, "channel")
        for s in range(C * H * W):
            ci = s // (H * W)
            assert len(walked(whole, s)) == sum(
                np.count_nonzero(p.weights[:, ci]) for p in graph.outgoing(k))


@pytest.mark.parametrize("stride, k, pad, hw, second", [
    (1, 3, 1, 4, None), (1, 3, 1, 8, (1, 1, 0)), (2, 3, 1, 7, None), (2, 2, 0, 4, None),
    (3, 5, 2, 9, (1, 3, 1)), (2, 4, 3, 6, (3, 1, 0)), (1, 5, 0, 5, None), (3, 3, 0, 3, None),
])
def test_class_lists_hold_exactly_the_landing_taps(stride, k, pad, hw, second):
    g = strided_graph(np.random.default_rng(stride * 100 + k * 10 + pad), stride, k, pad, hw,
                      second)
    check_every_source_walks_its_landing_taps(g)


def test_class_lists_on_random_networks(seed):
    rng = np.random.default_rng(seed)
    for case in range(25):
        check_every_source_walks_its_landing_taps(random_conv_graph(rng))


def test_both_layouts_give_the_reference_result_and_class_walks_no_wasted_tap(seed):
    """The cycle model on either layout == the reference, and "class" never takes more cycles
    (that it walks only landing taps is checked source by source above)."""
    rng = np.random.default_rng(seed)
    for case in range(12):
        g = random_conv_graph(rng)
        x = random_inputs(rng, g, 4)
        ref = run(g, x)
        cycles = {}
        for layout in ("class", "channel"):
            image = map_graph(g, layout)
            m = CoreModel(core_params_for(image, timesteps=g.timesteps)).run(image, x, g.timesteps)
            assert np.array_equal(m.v_final, np.concatenate(ref.v_final, axis=1)), (case, layout)
            assert np.array_equal(m.synops, ref.synops), (case, layout)
            assert all(np.array_equal(a, b) for a, b in zip(m.spikes, ref.spikes)), (case, layout)
            cycles[layout] = m.cycles
        assert (cycles["class"] <= cycles["channel"]).all(), case
