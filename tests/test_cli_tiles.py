"""The CLI on tile arrays: compile --target/--tiles, simulate --cycle-accurate, verify (RTL),
capacity errors and refusals."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from snnc.cli import main
from snnc.compiler.bundle import load_bundle
from snnc.compiler.data import quantize_inputs
from snnc.sim.reference import run

from .rtl.conftest import require
from .test_cli import error_of


def _export(model, n_in, path):
    torch.export.save(torch.export.export(model.eval(), (torch.zeros(2, n_in),)), path)


@pytest.fixture
def files(tmp_path):
    torch.manual_seed(0)
    _export(nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 7), nn.ReLU(), nn.Linear(7, 3)),
            6, tmp_path / "net.pt2")
    _export(nn.Sequential(nn.Linear(6, 600), nn.ReLU(), nn.Linear(600, 3)), 6, tmp_path / "wide.pt2")
    x = np.random.default_rng(0).random((24, 6))
    np.savez(tmp_path / "calib.npz", x=x)
    return tmp_path


def test_compile_simulate_verify_on_tiles(files, capsys):
    d = files
    assert main(["compile", str(d / "net.pt2"), "--bits", "4", "--calib", str(d / "calib.npz"),
                 "-T", "3", "--tiles", "3", "-o", str(d / "out")]) == 0
    out = capsys.readouterr().out
    assert "3 x 1 tiles of size xs" in out and "longest route" in out and "array.v" in out
    bundle = load_bundle(d / "out")
    assert bundle.tiled and bundle.core["target"]["cols"] == 3
    assert len(bundle.core["tiles"]) == 3 and (d / "out" / "mem" / "tile2" / "tgt.hex").is_file()
    assert main(["simulate", str(d / "out"), "--data", str(d / "calib.npz"), "--cycle-accurate",
                 "--json", str(d / "sim.json")]) == 0
    out = capsys.readouterr().out
    assert "cycle-accurate model of the tile array" in out and "inter-tile traffic" in out
    doc = json.loads((d / "sim.json").read_text())
    ref = run(bundle.graph, quantize_inputs(np.load(d / "calib.npz")["x"], bundle.meta))
    assert doc["predictions"] == ref.prediction.tolist()
    cyc = doc["cycle_accurate"]
    assert cyc["tiles"] == 3 and len(cyc["per_tile"]) == 3 and cyc["cycles_min"] > 0
    assert cyc["synops_reference_mean"] == ref.synops.mean()
    require("icarus")
    assert main(["verify", str(d / "out"), "--samples", "3", "--simulator", "icarus",
                 "--json", str(d / "v.json")]) == 0
    out = capsys.readouterr().out
    assert "BIT-EXACT" in out and "last tile's TOTAL" in out
    rep = json.loads((d / "v.json").read_text())
    assert rep["all_exact"] and len(rep["samples"]) == 3
    assert all(s["cycles"] == s["rtl_total_cycles"] for s in rep["samples"])


def test_cycle_model_beyond_the_compiled_hardware_is_an_error(files, capsys):
    """A max-pool's member counts grow with T: a run the tiles cannot count is refused up front
    (the single-core path too)."""
    d = files
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(8, 3)).eval()
    torch.export.save(torch.export.export(model, (torch.zeros(2, 1, 4, 4),)), d / "cnn.pt2")
    np.savez(d / "img.npz", x=np.random.default_rng(0).random((8, 1, 4, 4)))
    for extra in (["--tiles", "2"], []):
        out = d / f"b{len(extra)}"
        assert main(["compile", str(d / "cnn.pt2"), "--bits", "4", "--calib", str(d / "img.npz"),
                     "-T", "2", "-o", str(out)] + extra) == 0
        capsys.readouterr()
        err = error_of(capsys, ["simulate", str(out), "--data", str(d / "img.npz"),
                                "--cycle-accurate", "-T", "4000"])
        assert "--cycle-accurate at T=4000" in err and "max-pool count" in err
        assert "recompile with --timesteps 4000" in err


def test_capacity_error_names_layer_and_target(files, capsys):
    d = files
    err = error_of(capsys, ["compile", str(d / "wide.pt2"), "--bits", "4", "--calib",
                            str(d / "calib.npz"), "--target", "up5k-1", "-o", str(d / "out")])
    assert "does not fit target up5k-1" in err and "neurons 603 (a tile holds 512)" in err
    assert "layer '0'" in err and "ecp5-4" in err
    assert not (d / "out").exists()
    from snnc.compiler.tiles import TARGETS, partition
    assert not partition(load_graph_of(d / "wide.pt2", d / "calib.npz"), TARGETS["ecp5-4"],
                         check=False).problems()


@pytest.mark.parametrize("extra,message", [
    (["--tiles", "2", "--lanes", "2"], "one synapse lane"),
    (["--tiles", "2", "--input-walk", "once"], "walks the input every timestep"),
    (["--tiles", "0"], "--tiles must be 1..64"),
    (["--tiles", "2", "--target", "ecp5-4"], "not allowed with argument"),
])
def test_tile_options_are_checked(files, capsys, extra, message):
    d = files
    argv = ["compile", str(d / "net.pt2"), "--bits", "4", "--calib", str(d / "calib.npz"),
            "-o", str(d / "out")] + extra
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_board_commands_refuse_tiled_bundles(files, capsys):
    d = files
    assert main(["compile", str(d / "net.pt2"), "--bits", "4", "--calib", str(d / "calib.npz"),
                 "--tiles", "2", "-o", str(d / "out")]) == 0
    capsys.readouterr()
    err = error_of(capsys, ["build", str(d / "out"), "--board", "icebreaker", "-o", str(d / "b")])
    assert "is a tile array" in err and "without --target/--tiles" in err
    err = error_of(capsys, ["verify", str(d / "out"), "--netlist"])
    assert "not available for tile arrays" in err


def load_graph_of(model, calib):
    from snnc.compiler.pipeline import compile_model
    graph, _ = compile_model(model, bits=4, timesteps=4, max_strength=7, calib=calib, hardware=True)
    return graph
