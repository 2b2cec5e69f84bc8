"""The whole front end: three model formats to one verified Graph, metadata, option errors."""

import json

import numpy as np
import pytest
import torch

from snnc.compiler.data import quantize_inputs
from snnc.compiler.errors import SnncError
from snnc.compiler.pipeline import PASSES, compile_model, compile_variants
from snnc.ir import required_state_bits, verify
from snnc.sim.reference import run

from .conftest import calib_data, save_all_formats, seeded_mlp


def compile_formats(nets, tmp_path, **kwargs):
    paths = save_all_formats(seeded_mlp(nets), tmp_path)
    x, y = calib_data()
    np.savez(tmp_path / "calib.npz", x=x, y=y)
    opts = {"bits": 4, "timesteps": 4, "max_strength": 7, "calib": tmp_path / "calib.npz",
            **kwargs}
    return {
        "exported": compile_model(paths["exported"], **opts),
        "state_dict": compile_model(paths["state_dict"], arch="tinynets:MLP", **opts),
        "pickled": compile_model(paths["pickled"], trust_model=True, **opts),
    }


def test_three_formats_give_the_same_graph(nets, tmp_path):
    results = compile_formats(nets, tmp_path)
    graphs = [g for g, _ in results.values()]
    assert graphs[0] == graphs[1] == graphs[2]
    graph = verify(graphs[0])
    assert [p.name for p in graph.populations] == ["fc1", "fc2"]
    assert [p.size for p in graph.populations] == [5, 3]
    assert graph.input.shape == (6,) and graph.timesteps == 4 and graph.name == "net"
    assert [p.bits for p in graph.projections] == [4, 4]
    assert [meta["format"] for _, meta in results.values()] == ["exported", "state_dict", "pickled"]


def test_meta_is_json_ready_and_complete(nets, tmp_path):
    graph, meta = compile_formats(nets, tmp_path)["exported"]
    assert json.loads(json.dumps(meta)) == meta
    assert (meta["bits"], meta["timesteps"], meta["max_strength"], meta["percentile"]) == (4, 4, 7, 99.9)
    assert meta["input_signed"] is False and meta["input_shape"] == [6]
    assert meta["state_bits"] == required_state_bits(graph)
    assert [layer["theta"] for layer in meta["layers"]] == [p.theta for p in graph.populations]
    assert [layer["nnz"] for layer in meta["layers"]] == [p.nnz for p in graph.projections]
    assert meta["calibration"]["samples"] == 64
    assert 0.0 <= meta["ann_calib_accuracy"] <= 1.0
    assert any("Dropout" in d for d in meta["dropped_ops"])


def test_snn_agrees_with_the_float_network_at_8_bits(nets, tmp_path):
    model = seeded_mlp(nets)
    results = compile_formats(nets, tmp_path, bits=8, timesteps=16, max_strength=15)
    graph, meta = results["exported"]
    x, _ = calib_data(n=200, seed=1)
    want = model(torch.from_numpy(x).float()).argmax(dim=1).numpy()
    got = run(graph, quantize_inputs(x, meta)).prediction
    assert np.mean(got == want) >= 0.9


def test_signed_inputs(nets, tmp_path):
    paths = save_all_formats(seeded_mlp(nets), tmp_path)
    x, _ = calib_data(signed=True)
    graph, meta = compile_model(paths["exported"], bits=8, timesteps=2, max_strength=3,
                                calib=(x, None))
    assert graph.input.signed and meta["input_signed"] is True
    assert meta["calibration"]["source"] == "in-memory" and meta["ann_calib_accuracy"] is None


@pytest.mark.parametrize("kwargs, match", [
    ({"bits": 5}, "--bits must be 8, 4 or 2, not 5"),
    ({"timesteps": 0}, "--timesteps must be an integer in 1..4096"),
    ({"max_strength": 16}, "--max-strength must be an integer in 1..15"),
    ({"percentile": 0}, r"--percentile must be in \(0, 100\]"),
    ({"input_range": (0.0, 1.0)}, "--input-range is for compiling without --calib"),
    ({"input_shape": (0, 3)}, "--input-shape must be positive"),
])
def test_options_are_checked_before_loading(tmp_path, kwargs, match):
    opts = {"bits": 4, "timesteps": 4, "max_strength": 7, "calib": tmp_path / "c.npz", **kwargs}
    with pytest.raises(SnncError, match=match):
        compile_model(tmp_path / "does_not_exist.pt2", **opts)


def test_calibration_shape_must_match(nets, tmp_path):
    paths = save_all_formats(seeded_mlp(nets), tmp_path)
    with pytest.raises(SnncError, match=r"calibration set .* samples of shape \[5\], the model "
                                        r"expects \[6\]"):
        compile_model(paths["exported"], bits=4, timesteps=4, max_strength=7,
                      calib=(np.ones((3, 5)), None))


def test_pipeline_is_an_explicit_tuple():
    assert isinstance(PASSES, tuple) and all(callable(p) for p in PASSES)
    assert [p.__name__ for p in PASSES] == ["check", "load", "read_calibration", "extract",
                                            "prune_pass", "equalize_pass", "size_check",
                                            "check_calibration", "calibrate_pass",
                                            "convert_pass", "evaluate_pass"]


def test_cnn_pt2_and_compile_variants(tmp_path):
    from torch import nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                          nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)).eval()
    path = tmp_path / "cnn.pt2"
    torch.export.save(torch.export.export(model, (torch.rand(2, 1, 8, 8),)), path)
    x = np.random.default_rng(0).random((40, 1, 8, 8))
    variants = [{"bits": 8, "timesteps": 2, "max_strength": "15,0=3"},
                {"bits": 2, "timesteps": 3, "max_strength": 7}]
    many = compile_variants(path, variants, calib=(x, None))
    for v, (graph, meta) in zip(variants, many):
        one = compile_model(path, calib=(x, None), **v)
        assert one[0] == graph and one[1] == meta
        assert json.loads(json.dumps(meta)) == meta
    graph, meta = many[0]
    assert [p.name for p in graph.populations] == ["0", "3", "4", "6", "8"]
    assert [p.shape for p in graph.populations] == [(3, 8, 8), (3, 4, 4), (4, 4, 4), (4, 2, 2), (3,)]
    assert [p.s_max for p in graph.populations] == [3, 3, 15, 15, 1]
    assert meta["max_strength"] == "15,0=3" and many[1][1]["max_strength"] == 7
    assert [m["kind"] for m in meta["layers"]] == ["spiking", "maxpool", "spiking", "avgpool",
                                                   "readout"]
    assert meta["input_shape"] == [1, 8, 8]
    assert any("BatchNorm2d" in d for d in meta["dropped_ops"])
    run(graph, quantize_inputs(x.reshape(40, -1), meta))
    with pytest.raises(SnncError, match="--max-strength must be an integer in 1..15"):
        compile_variants(path, variants + [{"bits": 8, "timesteps": 2, "max_strength": 0}],
                         calib=(x, None))


def test_padding_same_from_pt2_equals_state_dict(nets, tmp_path):
    """``padding='same'`` exports as ``aten.conv2d.padding``; it compiles like the module."""
    torch.manual_seed(0)
    model = nets.SameCNN().eval()
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    torch.export.save(torch.export.export(model, (torch.rand(2, 1, 8, 8),)), tmp_path / "a/net.pt2")
    torch.save(model.state_dict(), tmp_path / "b/net.pt")
    x = np.random.default_rng(0).random((32, 1, 8, 8))
    opts = {"bits": 4, "timesteps": 4, "max_strength": 7, "calib": (x, None)}
    g_pt2, _ = compile_model(tmp_path / "a/net.pt2", **opts)
    g_sd, _ = compile_model(tmp_path / "b/net.pt", arch="tinynets:SameCNN",
                            input_shape=(1, 8, 8), **opts)
    assert g_pt2 == g_sd
    conv = g_pt2.projections[0]
    assert conv.padding == (1, 1) and g_pt2.populations[0].shape == (8, 8, 8)


def test_input_shape_comes_from_the_calibration_data(nets, tmp_path):
    """A state_dict CNN (no stored example, no leading Linear) needs no --input-shape."""
    torch.manual_seed(0)
    torch.save(nets.SameCNN().state_dict(), tmp_path / "net.pt")
    x = np.random.default_rng(0).random((16, 1, 8, 8))
    opts = {"bits": 4, "timesteps": 4, "max_strength": 7, "calib": (x, None),
            "arch": "tinynets:SameCNN"}
    graph, meta = compile_model(tmp_path / "net.pt", **opts)
    assert meta["input_shape"] == [1, 8, 8] and meta["warnings"] == []
    assert graph == compile_model(tmp_path / "net.pt", input_shape=(1, 8, 8), **opts)[0]
    with pytest.raises(SnncError, match=r"running the model on an example input of shape "
                                        r"\[2, 64\] failed .*\[64\] was taken from the "
                                        r"calibration data"):
        compile_model(tmp_path / "net.pt", **{**opts, "calib": (x.reshape(16, 64), None)})


def test_an_ignored_input_shape_is_a_warning(tmp_path):
    from torch import nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3)).eval()
    path = tmp_path / "cnn.pt2"
    torch.export.save(torch.export.export(model, (torch.rand(2, 1, 8, 8),)), path)
    opts = {"bits": 4, "timesteps": 4, "max_strength": 7,
            "calib": (np.random.default_rng(0).random((8, 64)), None)}
    _, meta = compile_model(path, input_shape=(64,), **opts)
    assert meta["warnings"] == ["--input-shape [64] is ignored: the exported model stores its "
                                "input's per-sample shape [1, 8, 8], which snnc uses (data may "
                                "be given in either shape)"]
    assert meta["input_shape"] == [1, 8, 8]
    assert compile_model(path, input_shape=(1, 8, 8), **opts)[1]["warnings"] == []


def test_without_calibration_data(nets, tmp_path):
    """No --calib: scales from random inputs in the range (default) or from weight bounds, a
    note that says data is better and how to pass it, and a graph that runs; --input-range
    moves the input scale (the range's, so that no input in it clips)."""
    from snnc.compiler.quantize import calibrate_from_bounds
    from snnc.sim.reference import run
    paths = save_all_formats(seeded_mlp(nets), tmp_path)
    opts = {"bits": 4, "timesteps": 4, "max_strength": 7}
    graph, meta = compile_model(paths["exported"], **opts)
    assert meta["calibration"]["source"] == "random inputs in [0, 1]"
    assert meta["calibration"]["samples"] == 0 and meta["snn_calib_accuracy"] is None
    assert meta["notes"][0].startswith("no --calib: thresholds from random inputs in [0, 1]")
    assert "--calib FILE.npz" in meta["notes"][0]
    assert meta["input_scale"] == 1 / 255 and not meta["input_signed"]
    x, _ = calib_data(n=8)
    run(graph, np.clip(np.round(x * 255), 0, 255).astype(np.int64).reshape(8, -1))
    gb, mb = compile_model(paths["exported"], data_free="bounds", **opts)
    assert mb["calibration"]["source"] == "model-based, inputs in [0, 1]"
    assert "weight and bias bounds" in mb["notes"][0]
    # the bounds' scale is the largest activation the weights allow: at least the noise's
    assert mb["layers"][0]["lambda"] >= meta["layers"][0]["lambda"] > 0
    g2, meta2 = compile_model(paths["exported"], input_range=(-2.0, 2.0), **opts)
    assert meta2["input_signed"] and meta2["input_scale"] == 2 / 127
    assert meta2["calibration"]["source"] == "random inputs in [-2, 2]"
    with pytest.raises(SnncError, match="--data-free must be one of noise, bounds"):
        compile_model(paths["exported"], data_free="zeros", **opts)


def test_prune_option_zeroes_weights_before_calibration(nets, tmp_path):
    """--prune 0.5: half of each layer's float weights are zero before quantization (so at
    least half of the stored synapses are gone), the metadata reports it, and 0 is no pass."""
    paths = save_all_formats(seeded_mlp(nets), tmp_path)
    x, y = calib_data()
    opts = {"bits": 8, "timesteps": 4, "max_strength": 7, "calib": (x, y)}
    g0, m0 = compile_model(paths["exported"], **opts)
    g1, m1 = compile_model(paths["exported"], prune=0.5, **opts)
    assert m0["pruning"] is None
    assert m1["pruning"]["fraction"] == 0.5 and m1["pruning"]["scope"] == "layer"
    rows = {r["name"]: r for r in m1["pruning"]["layers"]}
    assert {n: (r["weights"], r["zeros_after"]) for n, r in rows.items()} == \
        {"fc1": (30, 15), "fc2": (15, 8)}
    for p0, p1 in zip(g0.projections, g1.projections):
        assert np.count_nonzero(p1.weights) <= p0.weights.size // 2 + 1
    with pytest.raises(SnncError, match="--prune-scope must be one of layer, global"):
        compile_model(paths["exported"], prune=0.5, prune_scope="rows", **opts)
