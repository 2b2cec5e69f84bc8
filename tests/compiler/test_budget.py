"""Size before work: the estimates against real bundles, and fast refusals that write nothing."""

import time

import numpy as np
import pytest
import torch
from torch import nn

from snnc.cli import main
from snnc.compiler import budget
from snnc.compiler.bundle import write_bundle
from snnc.compiler.errors import SnncError
from snnc.compiler.extract import extract_layers
from snnc.compiler.pipeline import compile_module
from snnc.hw.mapping import core_params_for, map_graph
from snnc.hw.params import CORE_LIMITS
from snnc.ir import Dense, Graph, InputPopulation, Population
from snnc.testing import random_conv_graph

COUNTS = ("n_neurons", "n_sources", "n_entries", "n_words", "n_pops", "pop_sizes", "n_convs",
          "max_side", "max_strength", "pool_strength", "state_bits", "has_pool")


def mlp_graph(sizes=(16, 24, 3), bits=4, density=0.7, seed=0) -> Graph:
    """A dense chain with random ``bits``-bit weights (cheap: no compilation)."""
    rng = np.random.default_rng(seed)
    q = 2 ** (bits - 1) - 1
    pops, projs = [], []
    for k, n in enumerate(sizes[1:], start=1):
        last = k == len(sizes) - 1
        pops.append(Population(f"fc{k}", n, rng.integers(-5, 6, n), 7, 3, -1000, 1000, not last))
        w = rng.integers(-q, q + 1, (n, sizes[k - 1])) * (rng.random((n, sizes[k - 1])) < density)
        projs.append(Dense(k - 1, k, w, bits))
    return Graph(InputPopulation("in", (sizes[0],), False), tuple(pops), tuple(projs), timesteps=3)


def graphs():
    yield mlp_graph()
    yield mlp_graph((40, 64, 32, 10), bits=2, density=0.5, seed=1)
    for seed in range(3):
        yield random_conv_graph(np.random.default_rng(seed))


@pytest.mark.parametrize("lanes", [1, 4, 8])
@pytest.mark.parametrize("layout", ["class", "channel"])
@pytest.mark.parametrize("k", range(5))
def test_footprint_equals_the_mapping(k, layout, lanes):
    g = list(graphs())[k]
    fp = budget.graph_footprint(g, layout, lanes=lanes)
    image = map_graph(g, layout, lanes)
    assert {f: getattr(fp, f) for f in COUNTS} == {f: getattr(image, f) for f in COUNTS}
    assert fp.params == core_params_for(image, timesteps=g.timesteps)
    assert fp.params.lanes == lanes
    # the layers' entries are the stored synapses; the lanes' padding is not a layer's
    assert sum(n for _, n in fp.layer_entries) == map_graph(g, layout).n_entries


@pytest.mark.parametrize("k", [0, 2])
def test_estimate_bounds_the_written_bundle(tmp_path, k):
    g = list(graphs())[k]
    est = budget.bundle_bytes(budget.graph_footprint(g, input_once=True))
    b = write_bundle(tmp_path / "b", g, {"note": "x"})
    actual = {str(p.relative_to(b.path)): p.stat().st_size for p in b.path.rglob("*") if p.is_file()}
    assert set(actual) == set(est)
    for name in ("mem/ptr.hex", "mem/tgt.hex", "mem/wgt.hex", "mem/bias.hex"):
        assert est[name] == actual[name], name                       # exact
    assert all(est[name] >= actual[name] for name in actual)
    assert sum(actual.values()) <= sum(est.values()) < 3 * sum(actual.values()) + 200_000
    # core.v: every memory word's initializer is counted exactly; only the logic is an allowance.
    assert est["core.v"] - actual["core.v"] < 256 * 1024 + 8 * 1024 * 40


def test_float_footprint_is_a_lower_bound():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 30), nn.ReLU(), nn.Linear(30, 4)).eval()
    net = extract_layers(model, (12,))
    x = np.random.default_rng(0).random((50, 12))
    for bits in (8, 4, 2):
        g, _ = compile_model_from(model, x, bits)
        low, exact = budget.float_footprint(net, bits), budget.graph_footprint(g)
        assert 0 < low.n_entries <= exact.n_entries and low.n_words <= exact.n_words
        assert low.n_neurons <= exact.n_neurons and not low.exact


def test_float_footprint_bounds_conv_lists_by_class_too():
    """A 3x3 kernel with padding 1 on a 1-pixel-high map, stride 3: its top and bottom rows land
    for no source and are in no class list; the bound leaves them out."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, stride=(3, 1), padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 1 * 5, 3)).eval()
    net = extract_layers(model, (2, 1, 5))
    x = np.random.default_rng(0).random((50, 2, 1, 5))
    for bits in (8, 4, 2):
        g, _ = compile_model_from(model, x, bits)
        for layout in ("class", "channel"):
            low, exact = budget.float_footprint(net, bits), budget.graph_footprint(g, layout)
            assert 0 < low.n_entries <= exact.n_entries, (bits, layout)
        image = map_graph(g, "class")
        first = image.pops[1]["TBASE"]            # the input population's entries come first
        assert set(image.tgt_ky[:first].tolist()) == {1}
        # counting every large weight, as before, would exceed the class layout's entries
        assert np.count_nonzero(g.projections[0].weights) > image.pops[1]["TBASE"]


def compile_model_from(model, x, bits):
    ((g, meta),) = compile_module(model, [{"bits": bits, "timesteps": 3, "max_strength": 7}],
                                  calib=(x, None))
    return g, meta


def test_refusal_names_the_layer_and_the_figures(tmp_path):
    g = mlp_graph((8, 40, 50, 2), density=1.0)
    fp = budget.graph_footprint(g)
    limits = dict(CORE_LIMITS, synapses=1000)
    with pytest.raises(SnncError) as err:
        budget.check_footprint(fp, limits=limits)
    msg = str(err.value)
    (top, n), = fp.layer_entries[:1]
    assert top == "fc2" and f"{fp.n_entries:,} synapse entries" in msg
    assert f"layer 'fc2': {n:,}" in msg
    assert "at most 1,000" in msg and "SNNC_CORE_LIMIT_SCALE" in msg
    with pytest.raises(SnncError, match=r"needs about .* of memory.*has 1\.0 MB available"):
        budget.check_footprint(fp, limits=CORE_LIMITS, memory=2**20)
    with pytest.raises(SnncError, match=r"disk space.*has 0\.1 MB free"):
        budget.check_footprint(fp, limits=CORE_LIMITS, disk=100_000)
    assert budget.check_footprint(fp, limits=CORE_LIMITS, memory=2**40, disk=2**40) is fp


def test_limit_scale_environment():
    assert budget.core_limits({}) == CORE_LIMITS
    assert budget.core_limits({budget.LIMIT_SCALE_ENV: "3"})["synapses"] == 3 * CORE_LIMITS["synapses"]
    for bad in ("0", "x", "-1"):
        with pytest.raises(SnncError, match=budget.LIMIT_SCALE_ENV):
            budget.core_limits({budget.LIMIT_SCALE_ENV: bad})


def test_write_bundle_refuses_before_writing(tmp_path):
    # 620 x 900 weights: over the generator's 524,288 synapse entries, a few MB of arrays.
    g = mlp_graph((900, 620, 2), bits=8, density=1.0)
    t0 = time.perf_counter()
    n = g.projections[0].nnz
    assert n > CORE_LIMITS["synapses"]
    with pytest.raises(SnncError, match=rf"layer 'fc1': {n:,}[;)].*at most 524,288"):
        write_bundle(tmp_path / "out" / "b", g)
    assert time.perf_counter() - t0 < 5
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_network_too_large_for_a_core(tmp_path, capsys):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 1024), nn.ReLU(), nn.Linear(1024, 600), nn.ReLU(),
                          nn.Linear(600, 2)).eval()
    torch.export.save(torch.export.export(model, (torch.zeros(1, 8),)), tmp_path / "big.pt2")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).random((20, 8)))
    t0 = time.perf_counter()
    assert main(["compile", str(tmp_path / "big.pt2"), "--calib", str(tmp_path / "calib.npz"),
                 "--bits", "8", "-o", str(tmp_path / "out")]) == 2
    assert time.perf_counter() - t0 < 10
    err = capsys.readouterr().err
    assert err.startswith("snnc: error: the network is too large for one generated core")
    assert "Traceback" not in err and "layer '2': " in err and "at most 524,288" in err
    assert not (tmp_path / "out").exists()


def test_machine_reads_memory_and_disk(tmp_path):
    m = budget.machine(tmp_path / "not" / "yet")
    assert m["disk"] is not None and m["disk"] > 0
    assert m["memory"] is None or m["memory"] > 0
