"""Spreading a network over tiles (snnc.compiler.tiles): every neuron in exactly one part, parts
of whole channels, work balanced, what each tile holds counted exactly, the shipped targets fit
their devices, and a network too large gets an error that names the tile, the layer, the
figures and the target that would hold it."""

import numpy as np
import pytest

from snnc.compiler.budget import graph_footprint
from snnc.compiler.errors import SnncError
from snnc.compiler.tilemap import map_tiles
from snnc.compiler.tiles import (TARGETS, TILE_SIZES, TileTarget, TilingError, partition,
                                 smallest_fitting, target_for_tiles, tile_needs)
from snnc.ir import Dense, Graph, InputPopulation, Population
from snnc.testing import random_conv_graph, random_graph


def random_net(rng):
    return random_conv_graph(rng) if rng.random() < 0.5 else random_graph(rng, residual=True)


def test_one_tile_holds_what_the_single_core_mapping_holds(seed):
    """On one tile every population is one part, and the tile's counts are the single core's
    (graph_footprint, itself checked against the mapper), except that a source population
    without a single stored synapse takes no pointers; the count is never below what the tile's
    image holds."""
    rng = np.random.default_rng(seed)
    for case in range(20):
        g = random_net(rng)
        p = partition(g, TileTarget("one", 1, 1, "l", ""), check=False)
        fp = graph_footprint(g)
        need = p.needs[0]
        assert (need["neurons"], need["synapses"], need["weight words"]) == \
            (fp.n_neurons, fp.n_entries, max(1, fp.n_words)), case
        assert fp.n_sources >= need["sources"] >= map_tiles(g, p).tiles[0].n_sources, case
        assert need["populations"] == g.n_pops, case


@pytest.mark.parametrize("tiles", [2, 4, 8, 16])
def test_parts_cover_every_neuron_once_in_whole_channels(seed, tiles):
    rng = np.random.default_rng(seed)
    print("seed", seed)
    for case in range(8):
        g = random_net(rng)
        target = target_for_tiles(tiles)
        p = partition(g, target, check=False)
        assert p == partition(g, target, check=False) or p.parts == partition(
            g, target, check=False).parts          # deterministic
        for k in range(1, g.n_pops):
            mine = sorted((q for q in p.parts if q.pop == k), key=lambda q: q.lo)
            shape = g.shape(k)
            units = shape[0] if len(shape) == 3 else g.size(k)
            per = g.size(k) // units
            assert len(mine) == min(tiles, units), (case, k)
            assert mine[0].lo == 0 and mine[-1].hi == g.size(k), (case, k)
            assert all(a.hi == b.lo for a, b in zip(mine, mine[1:])), (case, k)
            assert all(q.lo % per == 0 and q.hi % per == 0 and q.size > 0 for q in mine), (case, k)
            assert len({q.tile for q in mine}) == len(mine), (case, k)
        # the neurons add up; synapses are split, never copied: dense ones exactly, and a
        # convolution's class lists per tile are its lists with the other channels' taps
        # removed, which can only merge a row class's slices (fewer lists of their own)
        assert sum(n["neurons"] for n in p.needs) == sum(g.size(k) for k in range(1, g.n_pops))
        one = partition(g, TileTarget("one", 1, 1, "l", ""), check=False).needs[0]
        total = sum(n["synapses"] for n in p.needs)
        if all(isinstance(q, Dense) for q in g.projections):
            assert total == one["synapses"], case
        else:
            assert total <= one["synapses"], case


def test_tile_needs_count_by_hand():
    """A 4-6-3 MLP on two tiles. The 6 hidden neurons (work 4 + 1 each) split 3 + 3. The outputs
    have work 3 + 1, 6 + 1, 1 + 1: cutting after output 0 leaves the larger part 9, after
    output 1 it would be 11, so the cut is 1 + 2. Each tile receives the input (4 sources) and
    the hidden layer (6: output 0 reads hidden 0, 2 and 4, on both tiles' parts). Its largest
    part has 3 neurons."""
    w1 = np.ones((6, 4), np.int64)
    w2 = np.array([[1, 0, 1, 0, 1, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1]], np.int64)
    pops = (Population("h", 6, np.zeros(6, np.int64), 4, 1, -100, 100),
            Population("o", 3, np.zeros(3, np.int64), 4, 1, -100, 100, False))
    g = Graph(InputPopulation("in", (4,), False), pops,
              (Dense(0, 1, w1, 4), Dense(1, 2, w2, 4)), timesteps=1)
    p = partition(g, TileTarget("two", 2, 1, "xs", ""))
    assert [(q.pop, q.lo, q.hi, q.tile) for q in p.parts] == \
        [(1, 0, 3, 0), (1, 3, 6, 1), (2, 0, 1, 0), (2, 1, 3, 1)]
    # tile 0: hidden 0-2 (12 input synapses, 6 words of two 4-bit weights), output 0 (3
    # synapses, 2 words); tile 1: hidden 3-5 (12), outputs 1-2 (6 + 1: 4 words)
    assert p.needs[0] == {"neurons": 4, "sources": 10, "synapses": 15, "weight words": 8,
                          "populations": 3, "population size": 3, "convolutions": 0}
    assert (p.needs[1]["synapses"], p.needs[1]["weight words"], p.needs[1]["neurons"]) == \
        (19, 10, 5)
    assert p.sources == ((0, 1), (0, 1))
    assert p.layers == ({"h": 12, "o": 3}, {"h": 12, "o": 7})
    assert p.longest_route() == 2


def test_work_is_balanced():
    """A layer whose neurons have very different fan-ins is cut by work, not by count."""
    w = np.zeros((8, 16), np.int64)
    w[0, :] = 1                 # neuron 0: 16 synapses
    w[1:, 0] = 1                # the others: 1 each
    pops = (Population("o", 8, np.zeros(8, np.int64), 4, 1, -100, 100, False),)
    g = Graph(InputPopulation("in", (16,), False), pops, (Dense(0, 1, w, 4),), timesteps=1)
    p = partition(g, TileTarget("two", 2, 1, "xs", ""))
    assert [(q.lo, q.hi) for q in p.parts] == [(0, 1), (1, 8)]


def test_shipped_targets_fit_their_devices():
    """The tile sizes the FPGA targets name fit the device's memories, host buffer included
    (the memory plan of snnc build): one extra-small tile on the UP5K, four small tiles in the
    ECP5-85F's block RAM."""
    from snnc.fpga.memplan import DEVICES, plan_memories
    from snnc.fpga.protocol import Layout
    xs = TARGETS["up5k-1"].tile
    plan_memories(xs, "iCE40UP5K", host_bytes=Layout(xs, xs.max_sources).max_payload)
    s = TARGETS["ecp5-4"].tile
    one = plan_memories(s, "LFE5U-85F", host_bytes=Layout(s, s.max_sources).max_payload)
    assert 4 * one.blocks_used <= DEVICES["LFE5U-85F"].blocks
    assert [t.n_tiles for t in TARGETS.values()] == [1, 4, 16]
    sizes = list(TILE_SIZES.values())
    assert all(a.max_synapses <= b.max_synapses and a.max_neurons < b.max_neurons
               for a, b in zip(sizes, sizes[1:]))


def test_tiles_option_picks_a_near_square_mesh_and_the_smallest_size():
    assert [(t.cols, t.rows) for t in map(target_for_tiles, (1, 2, 4, 6, 8, 16))] == \
        [(1, 1), (2, 1), (2, 2), (3, 2), (4, 2), (4, 4)]
    pops = (Population("o", 600, np.zeros(600, np.int64), 4, 1, -100, 100, False),)
    g = Graph(InputPopulation("in", (4,), False), pops,
              (Dense(0, 1, np.ones((600, 4), np.int64), 4),), timesteps=1)
    assert target_for_tiles(1, g).size == "s"        # 600 neurons: more than xs holds
    assert target_for_tiles(2, g).size == "xs"       # 300 per tile
    with pytest.raises(TilingError, match="1..64"):
        target_for_tiles(0)


def test_a_network_too_large_names_the_tile_the_layer_the_figures_and_a_target():
    pops = (Population("wide", 3000, np.zeros(3000, np.int64), 4, 1, -100, 100),
            Population("o", 10, np.zeros(10, np.int64), 4, 1, -100, 100, False))
    g = Graph(InputPopulation("in", (8,), False), pops,
              (Dense(0, 1, np.ones((3000, 8), np.int64), 4),
               Dense(1, 2, np.ones((10, 3000), np.int64), 4)), timesteps=1)
    with pytest.raises(SnncError) as exc:
        partition(g, TARGETS["ecp5-4"])
    msg = str(exc.value)
    assert "ecp5-4" in msg and "tile " in msg and "a tile holds" in msg
    assert "'wide'" in msg and "mesh-16" in msg, msg
    assert smallest_fitting(g).name == "mesh-16"
    huge = (Population("huge", 70000, np.zeros(70000, np.int64), 4, 1, -100, 100, False),)
    g2 = Graph(InputPopulation("in", (2,), False), huge,
               (Dense(0, 1, np.ones((70000, 2), np.int64), 4),), timesteps=1)
    with pytest.raises(TilingError, match="no shipped target holds it"):
        partition(g2, TARGETS["mesh-16"])


def test_a_pool_tile_keeps_only_its_channels_sources():
    """A conv layer of 4 channels, max-pooled, on 4 tiles: each pool part reads one channel, so
    its tile's pointer window is that channel's conv part (16 sources), not all 64; and that
    channel's tile alone sends it the spikes."""
    from snnc.ir import Conv, MaxPool
    rng = np.random.default_rng(0)
    conv = Conv(0, 1, rng.integers(1, 3, size=(4, 1, 3, 3)), 4, (1, 1), (1, 1))
    pops = (Population("c", 64, np.zeros(64, np.int64), 4, 3, -100, 100, shape=(4, 4, 4)),
            Population("p", 16, np.zeros(16, np.int64), 1, 3, 0, 0, shape=(4, 2, 2), maxpool=True),
            Population("o", 2, np.zeros(2, np.int64), 4, 1, -100, 100, False))
    g = Graph(InputPopulation("in", (1, 4, 4), False), pops,
              (conv, MaxPool(1, 2, 2), Dense(2, 3, rng.integers(1, 3, size=(2, 16)), 4)),
              timesteps=1)
    p = partition(g, TileTarget("four", 2, 2, "xs", ""))
    image = map_tiles(g, p)
    for t in range(4):
        lo, hi = image.parts[t][1]
        assert image.tiles[t].source_window(1) == (lo, hi)
        assert [d[1] for d in image.dst].count(1 << t) == 1 and image.dst[t][1] == 1 << t
    assert [n["sources"] for n in p.needs] == [16 + 16 + 16] * 2 + [16 + 16] * 2
