"""Mapping a graph onto the core's memories: packing, conv lists, reciprocal division, errors."""

import dataclasses

import numpy as np
import pytest

from snnc.hw.convlists import landing_taps
from snnc.hw.mapping import MappingError, core_params_for, map_graph, recip
from snnc.hw.params import CoreParams, SourceMode
from snnc.ir import Conv, Dense, Graph, InputPopulation, MaxPool, Population
from snnc.sim.core import unpack_weights
from snnc.testing import random_conv_graph


@pytest.mark.parametrize("coord_bits", range(1, 13))
def test_reciprocal_division_is_exact(coord_bits):
    p = CoreParams(coord_bits=coord_bits)
    n = np.arange(1 << (coord_bits + 1))
    for s in range(1, 8):
        assert np.array_equal((n * recip(s, p)) >> p.recip_shift, n // s), (coord_bits, s)


def test_weights_pack_and_unpack(seed):
    rng = np.random.default_rng(seed)
    from snnc.hw.mapping import _pack
    for bits, shift in ((8, 0), (4, 1), (2, 2)):
        lim = (1 << (bits - 1)) - 1
        w = rng.integers(-lim, lim + 1, size=int(rng.integers(0, 40)))
        assert np.array_equal(unpack_weights(_pack(w, bits), 0, len(w), shift), w)


@pytest.mark.parametrize("lanes", [2, 4, 8])
def test_banked_weights_pack_and_unpack(seed, lanes):
    """pack_banked: bank b packs entries b, b + lanes, ... byte by byte, interleaved; the
    twin's unpack (the core's bank and sub-word select) gives every weight back."""
    from snnc.hw.mapping import pack_banked
    rng = np.random.default_rng([seed, lanes])
    for bits, shift in ((8, 0), (4, 1), (2, 2)):
        lim = (1 << (bits - 1)) - 1
        w = rng.integers(-lim, lim + 1, size=int(rng.integers(0, 70)))
        words = pack_banked(w, bits, lanes)
        assert len(words) % lanes == 0
        assert np.array_equal(unpack_weights(words, 0, len(w), shift, lanes), w)


@pytest.mark.parametrize("lanes", [2, 4, 8])
def test_order_for_banks(seed, lanes):
    """A permutation; each issue of ``lanes`` entries holds one entry of every bank that still
    has entries; so the walk costs max(ceil(f / lanes), largest bank) cycles when the banks
    are balanced enough, and never more issue cycles than the input order."""
    from snnc.hw.mapping import order_for_banks

    def cost(t):
        return sum(max(1, int(np.bincount(t[i:i + lanes] % lanes).max()))
                   for i in range(0, len(t), lanes))
    rng = np.random.default_rng([seed, lanes, 1])
    for _ in range(200):
        t = np.sort(rng.choice(200, size=int(rng.integers(1, 60)), replace=False))
        perm = order_for_banks(t, lanes)
        assert sorted(perm.tolist()) == list(range(len(t)))
        counts = np.bincount(t % lanes, minlength=lanes)
        best = max(-(-len(t) // lanes), int(counts.max()))
        assert cost(t[perm]) <= cost(t)
        if (counts >= len(t) // lanes).all():          # every bank fills every full issue
            assert cost(t[perm]) == best
    # all targets in one bank: one cycle per entry, whatever the order
    t = np.arange(0, 40, lanes)
    assert cost(t[order_for_banks(t, lanes)]) == len(t)


def conv_net(c_in=2, hw=6, c_out=3, k=3, density=1.0, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.integers(-7, 8, (c_out, c_in, k, k)) * (rng.random((c_out, c_in, k, k)) < density)
    out = (c_out, hw, hw)
    n = int(np.prod(out))
    return Graph(InputPopulation("in", (c_in, hw, hw), False),
                 (Population("c", n, np.zeros(n, np.int64), 5, 3, -100, 100, shape=out),
                  Population("o", 2, np.zeros(2, np.int64), 1, 1, -10**6, 10**6, False)),
                 (Conv(0, 1, w, 4, (1, 1), (1, 1)), Dense(1, 2, rng.integers(-7, 8, (2, n)), 4)),
                 timesteps=2)


def test_conv_is_not_unrolled():
    g = conv_net(c_in=2, hw=6, c_out=3, k=3, density=0.5)
    conv = g.projections[0]
    image = map_graph(g, "channel")
    in_region = image.pops[0]
    assert in_region["SMODE"] == SourceMode.CONV
    # The input population's entries are its channel lists: exactly the nonzero taps, not
    # C_in*H*W fan-out lists.
    entries_in = image.pops[1]["TBASE"] - in_region["TBASE"]
    assert entries_in == conv.nnz
    # Every source of channel c shares the list of channel c.
    starts = image.ptr_start[:72].reshape(2, 36)
    assert (starts == starts[:, :1]).all()
    assert image.ptr_y[:72].reshape(2, 6, 6)[0, :, 0].tolist() == list(range(6))
    # By class: one list per channel and column class (left border, interior, right border),
    # each row class a slice of it: (2 + 3 + 2) / 3 of the taps at most, still not unrolled.
    image = map_graph(g, "class")
    entries_in = image.pops[1]["TBASE"] - image.pops[0]["TBASE"]
    assert conv.nnz < entries_in <= conv.nnz * 7 // 3
    starts = image.ptr_start[:72].reshape(2, 6, 6)
    assert len(np.unique(starts[0])) <= 9


def test_memory_report_counts_conv_entries(tmp_path):
    from snnc.compiler.bundle import write_bundle
    g = conv_net(density=0.5)
    b = write_bundle(tmp_path / "b", g)
    bits = b.core["usage"]["memory_bits"]
    p = core_params_for(map_graph(g), timesteps=2)
    assert bits["tgt"] == map_graph(g).n_entries * p.tgt_bits
    assert set(bits) >= {"ptr", "tgt", "wgt", "bias", "vmem", "spike_buffer"}
    # the core walks the input once: an input-current word per neuron of the conv layer
    assert bits["input_current"] == g.size(1) * b.core["params"]["v_bits"]


def test_mapping_errors_name_the_population():
    g = conv_net()
    n = g.size(1)
    mixed = g.replace(populations=g.populations + (Population("d", 2, np.zeros(2, np.int64), 1, 1, -9, 9, False),),
                      projections=g.projections + (Dense(1, 3, np.ones((2, n), np.int64), 8),))
    with pytest.raises(MappingError, match=r"different weight widths \[4, 8\]"):
        map_graph(mixed.replace(populations=tuple(
            p if p.name != "o" else Population("o", 2, np.zeros(2, np.int64), 1, 1, -9, 9, True)
            for p in mixed.populations)))


def test_random_conv_graphs_map_and_fit(seed):
    rng = np.random.default_rng(seed)
    for _ in range(30):
        g = random_conv_graph(rng)
        weighted = [p for p in g.projections if not isinstance(p, MaxPool)]
        pools = sum(1 for p in g.projections if isinstance(p, MaxPool))
        for layout in ("channel", "class"):
            image = map_graph(g, layout)
            params = core_params_for(image, timesteps=g.timesteps)
            assert params.fits(image.needs(g.timesteps)) == []
            # every stored weight is there: by channel all of them, by class every one whose
            # tap lands for some source (at least once)
            need = sum(p.nnz if layout == "channel" or not isinstance(p, Conv) else
                       np.count_nonzero(p.weights * landing_taps(
                           p.weights.shape[2:], g.shape(p.src)[1:], g.shape(p.dst)[1:],
                           p.stride, p.padding)) for p in weighted)
            assert image.n_entries >= need or pools


def test_mapping_rejects_dense_and_conv_from_one_population():
    g = conv_net(c_out=1, hw=4)
    n = g.size(1)
    c2 = Population("c2", n, np.zeros(n, np.int64), 5, 3, -100, 100, shape=(1, 4, 4))
    out = Population("o", 2, np.zeros(2, np.int64), 1, 1, -10**6, 10**6, False)
    g2 = g.replace(populations=(g.populations[0], c2, out),
                   projections=(g.projections[0],
                                Conv(1, 2, np.ones((1, 1, 3, 3), np.int64), 4, (1, 1), (1, 1)),
                                Dense(1, 3, np.ones((2, n), np.int64), 4),
                                Dense(2, 3, np.ones((2, n), np.int64), 4)))
    with pytest.raises(MappingError, match="population 1 \\('c'\\) feeds both dense and convolution"):
        map_graph(g2)


def test_a_source_without_synapses_at_the_end_fits_the_pointer():
    """Regression (found by test_random_networks_on_minimal_cores, seed 1179626754): the last
    source has no synapses, its start was the region's end (= max_synapses), which overflowed
    the pointer's start field into the count (count 1 instead of 0)."""
    w = np.zeros((5, 5), np.int64)
    w[1, 3], w[2, :3] = 24, (-12, 89, 122)
    g = Graph(InputPopulation("in", (5,), False),
              (Population("l1", 5, np.array([-10, 0, 18, 0, 0]), 13, 13, -5380, 5380, False),),
              (Dense(0, 1, w, 8),), timesteps=2)
    image = map_graph(g)
    p = core_params_for(image, timesteps=2)
    a, c = p.syn_addr_bits, p.count_bits
    words = image.ptr_words(p)
    assert [int(wd >> a) & ((1 << c) - 1) for wd in words] == image.ptr_count.tolist() == \
        [1, 1, 1, 1, 0]
    assert all(int(wd) & ((1 << a) - 1) == s for wd, s in zip(words, image.ptr_start))



def test_a_core_that_walks_the_input_once_needs_an_input_current_word_per_fed_neuron():
    from snnc.hw.mapping import check_fits
    g = conv_net()
    image = map_graph(g)
    assert image.input_fed == g.size(1)                # the input feeds the conv layer only
    p = core_params_for(image, timesteps=2, input_once=True)
    assert p.input_current_depth == g.size(1) and p.input_once
    check_fits(image, p, 2)
    assert not core_params_for(image, timesteps=2).input_once
    small = dataclasses.replace(p, input_current_depth=g.size(1) - 1)
    with pytest.raises(MappingError, match=f"input-current neurons: the input feeds neurons up "
                                           f"to {g.size(1)}, the core holds {g.size(1) - 1}"):
        check_fits(image, small, 2)
