"""The generated tile array under cocotb (Icarus and Verilator) against its twin and the
reference: random networks on 1, 2, 4 and 8 tiles with and without input gaps, and the demo CNN
on 2 and 8 tiles. (Tiles of a shipped size: tests/test_cli_tiles.py verifies a bundle.)

One array build serves every network of a mesh shape: the tiles have fixed capacities and each
network's images and routing tables are loaded through the array's ports.
"""

import dataclasses

import numpy as np
import pytest
from amaranth.back import verilog

from snnc.compiler.tilemap import array_params, map_tiles
from snnc.compiler.tiles import TileTarget, partition
from snnc.hw.array import TileArray
from snnc.hw.mapping import MappingError, check_fits
from snnc.hw.params import ArrayParams, CoreParams
from snnc.rtl.verify_array import run_array_networks
from snnc.testing import random_conv_graph, random_graph, random_inputs

from .conftest import require

TILE = CoreParams(max_neurons=128, max_sources=256, max_synapses=1024, max_pops=8,
                  max_pop_size=128, v_bits=32, strength_bits=4, max_convs=8, coord_bits=4,
                  pool_count_bits=12, tile=True)


def array(cols, rows):
    return ArrayParams(tile=TILE, cols=cols, rows=rows, index_bits=8, inbox_depth=257)


def draw(seed, case):
    """A random network that fits ``TILE`` on one tile (so on every tiling)."""
    for attempt in range(50):
        rng = np.random.default_rng([seed, case, attempt])
        g = (random_graph(rng, max_hidden=3, max_size=12, bits=(8, 4, 2)[case % 3])
             if case % 2 == 0 else random_conv_graph(rng, max_hw=6, bits=(8, 4, 2)[case % 3]))
        image = map_tiles(g, partition(g, TileTarget("1", 1, 1, "m", ""), check=False))
        try:
            check_fits(image.tiles[0], TILE, g.timesteps)
        except MappingError:
            continue
        if max(g.size(k) for k in range(g.n_pops)) < 256:
            return g, random_inputs(rng, g, 2)
    raise AssertionError("no fitting network drawn")


def spikes_of(got, T):
    """Every spike the RTL's tiles sent, per timestep, sorted: (t, pop, index, strength)."""
    out = []
    for tile in got["monitor"]:
        t = 0
        for _, pop, index, strength, eot in tile:
            if eot and pop == 0:
                t += 1
            elif not eot:
                out.append((t, pop, index, strength))
    return sorted(out)


def run_tiling(nets, cols, rows, simulator, seed, idle):
    p = array(cols, rows)
    items = []
    for g, xs in nets:
        image = map_tiles(g, partition(g, TileTarget("t", cols, rows, "m", ""), check=False))
        items.append((g, image, xs, g.timesteps))
    v = verilog.convert(TileArray(p), name="snnc_array")
    out = run_array_networks(items, p, v, simulator=simulator, seed=seed, idle=idle)
    for (g, *_), (model, mism, got) in zip(items, out):
        assert all(not m for m in mism), mism
    return [[spikes_of(g, T) for g in got] for (_, _, _, T), (_, _, got) in zip(items, out)]


def test_random_networks_on_1_2_4_8_tiles_icarus(seed):
    """The same networks on 1, 2, 4 and 8 tiles: RTL == twin (events with their cycles, counters,
    membranes) == reference on every tiling, and every tiling's RTL sends the same spikes."""
    require("icarus")
    nets = [draw(seed, case) for case in range(4)]
    spikes = [run_tiling(nets, cols, rows, "icarus", seed, idle=0.4 * (i % 2))
              for i, (cols, rows) in enumerate([(1, 1), (2, 1), (2, 2), (4, 2)])]
    assert all(s == spikes[0] for s in spikes[1:])


@pytest.fixture(scope="module")
def demo_cnn(tmp_path_factory):
    from snnc.demo import cnn_demo_reference
    out = tmp_path_factory.mktemp("cnn")
    r = cnn_demo_reference(out, bits=4, timesteps=2, table_bits=(4,), table_timesteps=(2,))
    return r["graph"], r["x_int"]


def _demo_on(g, tiles):
    from snnc.compiler.tiles import target_for_tiles
    image = map_tiles(g, partition(g, target_for_tiles(tiles, g)))
    return image, array_params(image, g.timesteps)


def test_demo_cnn_and_random_networks_on_2_tiles_verilator(demo_cnn, seed):
    """One Verilator build of a 2-tile array (sized for the demo CNN, with the random networks'
    widths): the demo CNN on real test images and 6 random networks, without and with input
    gaps; both runs send the same spikes."""
    require("verilator")
    g, x = demo_cnn
    image, fit = _demo_on(g, 2)
    wider = {f: max(getattr(fit.tile, f), getattr(TILE, f)) for f in (
        "max_neurons", "max_sources", "max_synapses", "max_pops", "max_pop_size", "v_bits",
        "max_convs", "coord_bits", "pool_count_bits")}
    wider["max_weight_words"] = max(fit.tile.weight_depth, TILE.weight_depth)
    wider["max_pool_sources"] = max(fit.tile.pool_depth, TILE.pool_depth)
    p = dataclasses.replace(fit, tile=dataclasses.replace(fit.tile, **wider),
                            index_bits=max(fit.index_bits, 8), inbox_depth=max(fit.inbox_depth, 257))
    items = [(g, image, x[:2].reshape(2, -1), g.timesteps)]
    for case in range(6):
        h, xs = draw(seed + 1, case)
        items.append((h, map_tiles(h, partition(h, TileTarget("t", 2, 1, "m", ""), check=False)),
                      xs, h.timesteps))
    v = verilog.convert(TileArray(p), name="snnc_array")
    runs = []
    for idle in (0.0, 0.5):
        out = run_array_networks(items, p, v, simulator="verilator", seed=seed, idle=idle)
        assert all(not m for _, mism, _ in out for m in mism), [m for _, mm, _ in out for m in mm if m]
        runs.append([[spikes_of(r, T) for r in got] for (*_, T), (_, _, got) in zip(items, out)])
    assert runs[0] == runs[1]


def test_demo_cnn_on_8_tiles_icarus(demo_cnn, seed):
    """The demo CNN on 8 (4 x 2) tiles: bit-exact, cycle for cycle, on a real test image."""
    require("icarus")
    g, x = demo_cnn
    image, p = _demo_on(g, 8)
    v = verilog.convert(TileArray(p), name="snnc_array")
    [(model, mism, got)] = run_array_networks([(g, image, x[:1].reshape(1, -1), g.timesteps)], p,
                                              v, simulator="icarus", seed=seed)
    assert all(not m for m in mism), mism
