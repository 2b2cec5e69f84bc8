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


# Ordering against membrane-bank conflicts (synapse lanes) ---------------------------------------

def _bases(graph, k, lists, image):
    projs = list(graph.outgoing(k))
    nbase = np.array([image.pops[p.dst]["NBASE"] for p in projs], np.int64)
    plane = np.array([graph.shape(p.dst)[1] * graph.shape(p.dst)[2] for p in projs], np.int64)
    return nbase[lists.proj] + lists.co * plane[lists.proj]


def test_bank_order_keeps_every_walk_and_costs_what_the_cycle_model_counts(seed):
    """On random convolution networks, lanes 2/4/8, skews 0 and random, both layouts: the order
    is a permutation that leaves each source's walk the same set of taps, never costs more
    stalls than the lists' own order, and its stalls per source are the ones the cycle model
    counts on the mapped image."""
    from snnc.hw.convlists import bank_stalls, order_for_banks
    from snnc.hw.params import CoreParams
    rng = np.random.default_rng(seed)
    print("seed", seed)
    for case in range(10):
        g = random_conv_graph(rng)
        lanes = int(rng.choice([2, 4, 8]))
        lane_bits = lanes.bit_length() - 1
        skew = int(rng.choice([0, int(rng.integers(lane_bits, 9))]))
        bank_of = CoreParams(lanes=lanes, bank_skew=skew).neuron_bank
        for layout in ("class", "channel"):
            image = map_graph(g, layout, lanes, skew)
            model = CoreModel(core_params_for(image, timesteps=g.timesteps))
            for k in conv_sources(g):
                lists = conv_lists(g, k, layout)
                bases = _bases(g, k, lists, image)
                perm = order_for_banks(lists, g, k, bases, bank_of, lanes)
                assert sorted(perm) == list(range(lists.n_entries)), (case, layout, k)
                ordered = lists.permuted(perm)
                for s in range(len(lists.count)):
                    assert sorted(walked(ordered, s)) == sorted(walked(lists, s)), (case, k, s)
                before = bank_stalls(lists, g, k, bases, bank_of, lanes)
                after = bank_stalls(ordered, g, k, bases[perm], bank_of, lanes)
                assert after.sum() <= before.sum(), (case, layout, k)
                # map_graph applies this order: the cycle model's stalls are these
                assert np.array_equal(model._walk_cost(image, k)[1], after), (case, layout, k)


def test_bank_order_reaches_zero_stalls_where_the_list_order_conflicts():
    """One 4x4 channel, a dense 3x3 convolution (padding 1) to 4 channels of 4x4, 4 lanes, skew
    4: output neuron (co, y', x') is in bank (x' + co) % 4. A source in the first column walks
    the taps kx = 0, 1 of each (co, ky): banks (1 - kx + co) % 4, each bank twice per kernel
    row, so an order with no conflict exists, while the lists' (co, kx) order puts (co 0, kx 0)
    and (co 1, kx 1) in bank 1 of one issue."""
    from snnc.hw.convlists import bank_stalls, order_for_banks
    from snnc.hw.params import CoreParams
    inp = InputPopulation("in", (1, 4, 4), False)
    pop = Population("c", 64, np.zeros(64, np.int64), 3, 3, -10**4, 10**4, False, (4, 4, 4))
    g = Graph(inp, (pop,), (Conv(0, 1, np.ones((4, 1, 3, 3), np.int64), 4, (1, 1), (1, 1)),),
              timesteps=1)
    bank_of = CoreParams(lanes=4, bank_skew=4).neuron_bank
    assert [int(bank_of(co * 16 + y * 4 + x)) for co in range(4) for y in (0, 3) for x in (0, 3)] \
        == [(x + co) % 4 for co in range(4) for y in (0, 3) for x in (0, 3)]
    lists = conv_lists(g, 0, "class")
    bases = lists.co * 16
    before = bank_stalls(lists, g, 0, bases, bank_of, 4)
    assert before.sum() > 0 and before[0] > 0       # source (0, 0)
    perm = order_for_banks(lists, g, 0, bases, bank_of, 4)
    assert bank_stalls(lists.permuted(perm), g, 0, bases[perm], bank_of, 4).sum() == 0
    image = map_graph(g, "class", 4, 4)
    model = CoreModel(core_params_for(image, timesteps=1))
    assert model._walk_cost(image, 0)[1].sum() == 0


def test_lanes_with_a_list_whose_taps_never_land():
    """A 5x5 kernel with only tap (0, 0) on a 3x3 map with padding 1 (a 1x1 output): that tap
    lands for no source, so the channel layout stores it and every walk of it updates nothing.
    At 4 lanes it occupies no bank: no stall, and the cycle model still equals the reference
    (CI found the twin failing on such a population, seed 148754558)."""
    from snnc.sim.reference import run
    w = np.zeros((2, 1, 5, 5), np.int64)
    w[:, 0, 0, 0] = [3, -2]
    inp = InputPopulation("in", (1, 3, 3), False)
    pop = Population("c", 2, np.zeros(2, np.int64), 3, 3, -100, 100, False, (2, 1, 1))
    g = Graph(inp, (pop,), (Conv(0, 1, w, 4, (1, 1), (1, 1)),), timesteps=2)
    x = np.arange(9, dtype=np.int64)[None, :] % 4
    image = map_graph(g, "channel", 4, 0)
    assert image.n_entries >= 2
    m = CoreModel(core_params_for(image, timesteps=2))
    out = m.run(image, x, 2)
    assert out.bank_stalls.sum() == 0
    assert np.array_equal(out.v_final, np.concatenate(run(g, x).v_final, axis=1))
