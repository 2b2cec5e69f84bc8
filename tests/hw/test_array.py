"""The tile array (snnc.hw.array) against its twin (snnc.sim.array) in the Amaranth simulator:
every tile's output events with their cycles, counters and membranes; and the twin against the
single core and the reference across tilings (only cycles differ)."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from snnc.compiler.tilemap import array_params, map_tiles
from snnc.compiler.tiles import TileTarget, partition
from snnc.hw.array import TileArray, table_writes
from snnc.hw.mapping import config_writes, map_graph
from snnc.hw.params import ArrayParams, CoreParams, Counter
from snnc.rtl.verify_array import _contract_state
from snnc.sim.array import ArrayModel
from snnc.sim.core import CoreModel
from snnc.sim.reference import run as ref_run
from snnc.ir import Readout
from snnc.testing import random_conv_graph, random_graph, random_inputs


def tiled(graph, cols, rows=1, size="m"):
    part = partition(graph, TileTarget(f"{cols}x{rows}", cols, rows, size, ""), check=False)
    image = map_tiles(graph, part)
    return image, array_params(image, graph.timesteps)


def run_rtl(params, image, xs, T, *, idle=0.0, seed=0, load=False):
    """Every sample on the RTL: per tile the monitor (cycle, pop, index, strength, eot), the
    counters and the membranes. ``idle``: probability of a gap on the host's input per cycle.
    ``load``: an array without a built-in network, loaded through its ports first."""
    dut = TileArray(params) if load else TileArray(params, image, T)
    rng = random.Random(seed)
    results = []

    async def bench(ctx):
        if load:
            for t, img in enumerate(image.tiles):
                ctx.set(dut.cfg_tiles, 1 << t)
                ctx.set(dut.cfg_we, 1)
                for sel, addr, data in config_writes(img, params.tile, T):
                    ctx.set(dut.cfg_sel, sel)
                    ctx.set(dut.cfg_addr, addr)
                    ctx.set(dut.cfg_data, data)
                    await ctx.tick()
            ctx.set(dut.cfg_we, 0)
            ctx.set(dut.tbl_we, 1)
            for tiles, sel, addr, data in table_writes(params, image):
                ctx.set(dut.cfg_tiles, tiles)
                ctx.set(dut.tbl_sel, sel)
                ctx.set(dut.tbl_addr, addr)
                ctx.set(dut.tbl_data, data)
                await ctx.tick()
            ctx.set(dut.tbl_we, 0)
        for x in xs:
            nz = np.flatnonzero(x)
            toks = ([(int(i), int(x[i]), 0) for i in nz] + [(0, 0, 1)]) * T
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            mon = [[] for _ in range(params.n_tiles)]
            cycle = 0
            while True:
                cycle += 1
                offer = bool(toks) and rng.random() >= idle
                ctx.set(dut.inp.valid, offer)
                if offer:
                    ctx.set(dut.inp.payload.index, toks[0][0])
                    ctx.set(dut.inp.payload.value, toks[0][1])
                    ctx.set(dut.inp.payload.eot, toks[0][2])
                    if ctx.get(dut.inp.ready):
                        toks.pop(0)
                for t in range(params.n_tiles):
                    m = ctx.get(dut.mon[t])
                    if m.valid:
                        mon[t].append((cycle, int(m.pop), int(m.index), int(m.strength), int(m.eot)))
                busy = ctx.get(dut.busy)
                await ctx.tick()
                if not busy and cycle > 2:
                    break
                assert cycle < 500_000, "the array did not finish"
            assert not ctx.get(dut.overflow)
            tiles = []
            for t in range(params.n_tiles):
                ctx.set(dut.rb_tile, t)
                ctx.set(dut.rb_sel, 1)
                cnt = {}
                for a in [Counter.ACTIVE, Counter.TOTAL, Counter.SYNOPS, Counter.TIMESTEP] + \
                        [Counter.SPIKES + k for k in range(1, image.n_pops)]:
                    ctx.set(dut.rb_addr, a)
                    await ctx.tick()
                    cnt[int(a)] = ctx.get(dut.rb_data)
                ctx.set(dut.rb_sel, 0)
                v = []
                for n in range(image.tiles[t].n_neurons):
                    ctx.set(dut.rb_addr, n)
                    await ctx.tick()
                    v.append(_contract_state(image, params, t, n, ctx.get(dut.rb_data)))
                tiles.append({"counters": cnt, "v": v})
            results.append({"monitor": mon, "tiles": tiles})

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return results


def check_rtl(graph, image, params, xs, *, idle=0.0, seed=0, load=False):
    T = graph.timesteps
    model = ArrayModel(params).run(image, xs, T)
    for b, got in enumerate(run_rtl(params, image, xs, T, idle=idle, seed=seed, load=load)):
        for t in range(params.n_tiles):
            want = model.monitor[b][t]
            mon = got["monitor"][t]
            if idle:       # gaps move cycles, not events
                want, mon = [w[1:] for w in want], [w[1:] for w in mon]
            assert mon == want, f"sample {b}, tile {t}: output events differ"
            cnt = got["tiles"][t]["counters"]
            assert cnt[Counter.ACTIVE] == model.active[b, t]
            assert cnt[Counter.SYNOPS] == model.synops[b, t]
            assert cnt[Counter.TIMESTEP] == T
            for k in range(1, image.n_pops):
                assert cnt[Counter.SPIKES + k] == model.spike_counts[b, t, k]
            if idle:
                assert cnt[Counter.TOTAL] >= model.total[b, t]
            else:
                assert cnt[Counter.TOTAL] == model.total[b, t]
            assert got["tiles"][t]["v"] == model.v_final[t][b].tolist()
    return model


def check_against_single_core(graph, image, params, xs, model=None):
    """The array's results equal the single core's and the reference's."""
    T = graph.timesteps
    model = model or ArrayModel(params).run(image, xs, T, cycles=False)
    ref = ref_run(graph, xs)
    assert np.array_equal(model.v_global, np.concatenate(ref.v_final, axis=1))
    single = CoreModel(CoreParams(max_neurons=4096, max_sources=4096, max_synapses=65536,
                                  max_pops=16, max_pop_size=4096, max_convs=16, coord_bits=6,
                                  v_bits=40)).run(map_graph(graph), xs, T)
    for k in range(1, graph.n_pops):
        assert np.array_equal(model.spikes[k - 1], single.spikes[k - 1])
    assert np.array_equal(model.v_global, single.v_final)
    # Every tile's events, merged per timestep and population, are the single core's.
    for b in range(len(xs)):
        merged = sorted(e for tile in model.events[b] for e in tile)
        assert merged == sorted(single.events[b])


@pytest.mark.parametrize("cols,rows", [(1, 1), (2, 1), (2, 2), (1, 3)])
def test_dense_networks_rtl_equals_twin(seed, cols, rows):
    rng = np.random.default_rng(seed)
    g = random_graph(rng, max_hidden=3, max_size=10, max_in=10)
    image, params = tiled(g, cols, rows)
    xs = random_inputs(rng, g, 2)
    model = check_rtl(g, image, params, xs)
    check_against_single_core(g, image, params, xs, model)


@pytest.mark.parametrize("cols,rows", [(1, 1), (3, 1), (2, 2)])
def test_conv_networks_rtl_equals_twin(seed, cols, rows):
    rng = np.random.default_rng(seed)
    g = random_conv_graph(rng, max_hw=6)
    image, params = tiled(g, cols, rows)
    xs = random_inputs(rng, g, 2)
    model = check_rtl(g, image, params, xs)
    check_against_single_core(g, image, params, xs, model)


def test_spike_count_readout_and_residuals(seed):
    """A spiking readout (its spikes go nowhere but the host) and residual additions, on 3 tiles."""
    rng = np.random.default_rng(seed)
    g = random_graph(rng, max_hidden=2, max_size=9, max_in=8, residual=True,
                     readout=Readout.SPIKE_COUNT)
    image, params = tiled(g, 3, 1)
    xs = random_inputs(rng, g, 2)
    model = check_rtl(g, image, params, xs)
    check_against_single_core(g, image, params, xs, model)


def test_array_loaded_through_its_ports(seed):
    """Without a built-in network: configuration and table writes, then the same cycles."""
    rng = np.random.default_rng(seed)
    g = random_conv_graph(rng, max_hw=5)
    image, params = tiled(g, 2, 1)
    check_rtl(g, image, params, random_inputs(rng, g, 2), load=True)


def test_input_gaps_change_only_cycles(seed):
    rng = np.random.default_rng(seed)
    g = random_graph(rng, max_hidden=2, max_size=10, max_in=10)
    image, params = tiled(g, 2, 2)
    check_rtl(g, image, params, random_inputs(rng, g, 2), idle=0.6, seed=seed)


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_tilings_agree_with_the_reference(seed, kind):
    """1 to 8 tiles, many random networks: the same spikes and membranes (twin)."""
    for case in range(6):
        rng = np.random.default_rng([seed, case])
        g = random_graph(rng, max_hidden=3) if kind == "dense" else random_conv_graph(rng)
        xs = random_inputs(rng, g, 3)
        for cols, rows in [(1, 1), (2, 1), (2, 2), (4, 2)]:
            image, params = tiled(g, cols, rows)
            check_against_single_core(g, image, params, xs)


def test_one_tile_image_is_the_single_core_layout():
    """Entries, weights, biases and records of a one-tile image are the single core's (the
    pointer memory keeps only the populations the tile receives)."""
    for seed in range(20):
        rng = np.random.default_rng(seed)
        g = random_conv_graph(rng) if seed % 2 else random_graph(rng, max_hidden=3)
        image, _ = tiled(g, 1)
        a, b = image.tiles[0], map_graph(g)
        for f in ("tgt", "tgt_ky", "tgt_kx", "wgt", "bias"):
            assert np.array_equal(getattr(a, f), getattr(b, f)), f
        for k in range(g.n_pops):
            if image.receives(0, k):
                sa, sb, n = a.pops[k]["SBASE"], b.pops[k]["SBASE"], b.pop_sizes[k]
                assert np.array_equal(a.ptr_count[sa:sa + n], b.ptr_count[sb:sb + n])
                assert np.array_equal(a.ptr_start[sa:sa + n], b.ptr_start[sb:sb + n])
                assert a.pops[k]["TBASE"] == b.pops[k]["TBASE"]


def test_tile_entries_match_the_partition_count():
    for seed in range(10):
        rng = np.random.default_rng(seed)
        g = random_conv_graph(rng) if seed % 2 else random_graph(rng, max_hidden=3)
        for cols in (2, 3, 4):
            part = partition(g, TileTarget("t", cols, 1, "m", ""), check=False)
            image = map_tiles(g, part)
            assert sum(i.n_neurons for i in image.tiles) == sum(g.size(k) for k in range(1, g.n_pops))
            for t, img in enumerate(image.tiles):
                if part.on_tile(t):
                    assert img.n_entries == part.needs[t]["synapses"]


def test_array_params_are_checked():
    with pytest.raises(ValueError, match="tile-mode"):
        ArrayParams(tile=CoreParams())
    with pytest.raises(ValueError, match="one lane"):
        CoreParams(tile=True, lanes=2)
    with pytest.raises(ValueError, match="one lane"):
        CoreParams(tile=True, input_current_depth=4)
