"""The command line: compile -> simulate round trip, user errors (exit 2, no traceback), demo."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from snnc.cli import main
from snnc.demo import demo_reference
from snnc.compiler.bundle import load_bundle
from snnc.compiler.data import quantize_inputs
from snnc.compiler.pipeline import DEFAULT_MAX_STRENGTH, DEFAULT_TIMESTEPS
from snnc.hw.params import CoreParams
from snnc.sim.reference import run


@pytest.fixture
def model_files(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    torch.export.save(torch.export.export(model, (torch.zeros(2, 6),)), tmp_path / "net.pt2")
    torch.save(model, tmp_path / "pickled.pt")
    gen = np.random.default_rng(0)
    x = gen.random((40, 6))
    y = model(torch.from_numpy(x).float()).argmax(dim=1).numpy()
    np.savez(tmp_path / "calib.npz", x=x, y=y)
    return tmp_path


def error_of(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_compile_then_simulate(model_files, capsys):
    d = model_files
    assert main(["compile", str(d / "net.pt2"), "--bits", "4", "--calib", str(d / "calib.npz"),
                 "-T", "6", "-S", "7", "-o", str(d / "out")]) == 0
    out = capsys.readouterr().out
    assert "compiled" in out and "theta" in out and "membrane state" in out and "manifest.json" in out
    assert "core memory, bits: ptr " in out and "total" in out
    bundle = load_bundle(d / "out")
    assert bundle.graph.timesteps == 6 and bundle.meta["max_strength"] == 7
    assert main(["simulate", str(d / "out"), "--data", str(d / "calib.npz"), "--batch-size", "16",
                 "--json", str(d / "res.json")]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "synaptic ops" in out
    doc = json.loads((d / "res.json").read_text())
    x = np.load(d / "calib.npz")["x"]
    ref = run(bundle.graph, quantize_inputs(x, bundle.meta))
    assert doc["predictions"] == ref.prediction.tolist()
    assert doc["samples"] == 40 and doc["timesteps"] == 6
    assert doc["correct"] == int(np.sum(ref.prediction == np.load(d / "calib.npz")["y"]))
    assert doc["mean"]["synops"] == ref.synops.mean()
    assert doc["mean"]["spikes"]["0"] == ref.spike_counts[:, 0].mean()


def test_simulate_timesteps_override(model_files, capsys):
    d = model_files
    assert main(["compile", str(d / "net.pt2"), "--bits", "8", "--calib", str(d / "calib.npz"),
                 "-o", str(d / "out")]) == 0
    assert main(["simulate", str(d / "out"), "--data", str(d / "calib.npz"), "-T", "2",
                 "--json", str(d / "r.json")]) == 0
    assert json.loads((d / "r.json").read_text())["timesteps"] == 2
    captured = capsys.readouterr()
    assert "T=2" in captured.out and "may clamp" not in captured.err
    # A run longer than the compiled T says that the readout bounds were sized for fewer steps.
    assert main(["simulate", str(d / "out"), "--data", str(d / "calib.npz"), "-T", "9"]) == 0
    err = capsys.readouterr().err
    assert "compiled for T=4" in err and "--timesteps 9" in err


@pytest.mark.parametrize("extra, message", [
    (["--bits", "3"], "snnc: error: --bits must be 8, 4 or 2, not 3"),
    (["--bits", "4", "--max-strength", "16"], "snnc: error: --max-strength must be an integer in 1..15"),
    (["--bits", "4", "--timesteps", "0"], "snnc: error: --timesteps must be an integer in 1..4096"),
    (["--bits", "4", "--percentile", "0"], "snnc: error: --percentile must be in (0, 100]"),
])
def test_bad_flags(model_files, capsys, extra, message):
    d = model_files
    err = error_of(capsys, ["compile", str(d / "net.pt2"), "--calib", str(d / "calib.npz"),
                            "-o", str(d / "out"), *extra])
    assert err.startswith(message)


def test_untrusted_pickle_message(model_files, capsys):
    d = model_files
    err = error_of(capsys, ["compile", str(d / "pickled.pt"), "--bits", "4", "--calib",
                            str(d / "calib.npz"), "-o", str(d / "out")])
    assert err.startswith("snnc: error: ") and "--trust-model" in err and "torch.export" in err
    assert main(["compile", str(d / "pickled.pt"), "--bits", "4", "--calib", str(d / "calib.npz"),
                 "--trust-model", "-o", str(d / "out")]) == 0


def test_user_errors_exit_2_without_traceback(model_files, capsys):
    d = model_files
    assert "--input-range is for compiling without --calib" in error_of(
        capsys, ["compile", str(d / "net.pt2"), "--bits", "4", "--calib", str(d / "calib.npz"),
                 "--input-range", "0,1", "-o", str(d / "o")])
    assert "does not exist" in error_of(
        capsys, ["compile", str(d / "nope.pt2"), "--bits", "4", "--calib", "c.npz", "-o", "o"])
    assert "not a bundle directory" in error_of(
        capsys, ["simulate", str(d / "missing"), "--data", str(d / "calib.npz")])
    assert main(["compile", str(d / "net.pt2"), "--bits", "4", "--calib", str(d / "calib.npz"),
                 "-o", str(d / "out")]) == 0
    np.savez(d / "wrong.npz", x=np.ones((3, 7)))
    assert "the model expects [6]" in error_of(
        capsys, ["simulate", str(d / "out"), "--data", str(d / "wrong.npz")])
    for T in ("0", "4097", "99999999999"):   # a huge T once ran out of memory in numpy
        assert f"--timesteps must be an integer in 1..4096, not {T}" in error_of(
            capsys, ["simulate", str(d / "out"), "--data", str(d / "calib.npz"), "-T", T])


def test_usage_errors_and_help(capsys):
    assert main([]) == 2
    for shape in ("a,b", "1,x", "1,,8", "8x"):   # no part may be dropped silently
        assert main(["compile", "m.pt2", "-o", "x", "--bits", "4", "--input-shape", shape]) == 2
        assert f"expected sizes like 1,8,8 or 64, not '{shape}'" in capsys.readouterr().err
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "snnc compile model.pt2" in out and "--trust-model" in out
    assert main(["compile", "--help"]) == 0
    assert f"(default: {DEFAULT_TIMESTEPS})" in capsys.readouterr().out


def test_python_dash_m(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "snnc", "compile", str(tmp_path / "m.pt2"),
                           "--bits", "4", "-o", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("snnc: error: ") and "does not exist" in proc.stderr


def test_compile_without_calibration_data(model_files, capsys):
    """The first command users type works: no --calib, one note line on how to do better."""
    d = model_files
    assert main(["compile", str(d / "net.pt2"), "--bits", "4", "-o", str(d / "nocal")]) == 0
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if "no --calib" in line]
    assert len(notes) == 1 and "--calib FILE.npz" in notes[0], out
    assert main(["compile", str(d / "net.pt2"), "--bits", "4", "--prune", "0.5",
                 "--prune-scope", "global", "-o", str(d / "pruned")]) == 0
    out = capsys.readouterr().out
    assert "pruned to 50.0% zeros (global), before quantization: " in out, out
    for bad in ("1", "-0.1", "x"):
        assert main(["compile", str(d / "net.pt2"), "--bits", "4", "--prune", bad,
                     "-o", str(d / "x")]) == 2
        assert "expected a fraction" in capsys.readouterr().err
    for bad in ("1,0", "0", "a,b", "0,inf"):
        assert main(["compile", str(d / "net.pt2"), "--bits", "4", "--input-range", bad,
                     "-o", str(d / "x")]) == 2
        assert "expected" in capsys.readouterr().err


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_reference(tmp_path_factory.mktemp("demo"), bits=4, timesteps=DEFAULT_TIMESTEPS,
                          max_strength=DEFAULT_MAX_STRENGTH)


def test_demo_defaults_keep_4_bit_snn_within_2_points(demo):
    assert demo["report"]["samples"] == 540
    assert demo["ann_accuracy"] >= 0.95
    assert demo["ann_accuracy"] - demo["snn_accuracy"] <= 0.02
    assert demo["meta"]["bits"] == 4 and demo["graph"].timesteps == DEFAULT_TIMESTEPS


def test_demo_command_without_rtl(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--rtl-samples", "0"]) == 0
    out = capsys.readouterr().out
    assert "float ANN test accuracy" in out and "SNN reference test accuracy" in out
    assert "RTL check skipped" in out
    assert load_bundle(tmp_path / "bundle").meta["bits"] == 4
    assert (tmp_path / "digits_mlp.pt2").is_file() and (tmp_path / "test.npz").is_file()


def test_simulate_cycle_accurate(model_files, capsys):
    """--cycle-accurate prints and records the cycle model's exact figures."""
    from snnc.hw.mapping import map_graph
    from snnc.hw.params import CoreParams
    from snnc.sim.core import CoreModel
    d = model_files
    assert main(["compile", str(d / "net.pt2"), "--bits", "8", "--calib", str(d / "calib.npz"),
                 "-T", "3", "-o", str(d / "out")]) == 0
    capsys.readouterr()
    assert main(["simulate", str(d / "out"), "--data", str(d / "calib.npz"), "--cycle-accurate",
                 "--clock-mhz", "25", "--json", str(d / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "cycles per inference" in out and "latency at 25 MHz" in out and "utilization" in out
    doc = json.loads((d / "c.json").read_text())["cycle_accurate"]
    bundle = load_bundle(d / "out")
    x = quantize_inputs(np.load(d / "calib.npz")["x"], bundle.meta)
    model = CoreModel(CoreParams(**bundle.core["params"])).run(bundle.image(), x, 3)
    assert doc["cycles_min"] == model.cycles.min() and doc["cycles_max"] == model.cycles.max()
    assert doc["samples"] == 40 and doc["clock_mhz"] == 25.0
    assert error_of(capsys, ["simulate", str(d / "out"), "--data", str(d / "calib.npz"),
                             "--cycle-accurate", "--clock-mhz", "0"]).startswith(
        "snnc: error: --clock-mhz must be a positive")


def test_verify_rejects_bad_flags(model_files, capsys):
    d = model_files
    assert main(["compile", str(d / "net.pt2"), "--bits", "8", "--calib", str(d / "calib.npz"),
                 "-o", str(d / "out")]) == 0
    capsys.readouterr()
    assert "--samples must be in 1..100,000" in error_of(capsys, ["verify", str(d / "out"), "--samples", "0"])
    assert "--stall must be in 0..0.9" in error_of(capsys, ["verify", str(d / "out"), "--stall", "1"])
    assert "not a bundle directory" in error_of(capsys, ["verify", str(d / "nope")])


def test_per_layer_max_strength(model_files, capsys):
    d = model_files
    assert main(["compile", str(d / "net.pt2"), "--bits", "4", "--calib", str(d / "calib.npz"),
                 "-S", "7,0=3", "-o", str(d / "out")]) == 0
    bundle = load_bundle(d / "out")
    assert [p.s_max for p in bundle.graph.populations] == [3, 1]
    assert bundle.meta["max_strength"] == "7,0=3"
    capsys.readouterr()
    err = error_of(capsys, ["compile", str(d / "net.pt2"), "--bits", "4", "--calib",
                            str(d / "calib.npz"), "-S", "7,nope=3", "-o", str(d / "o2")])
    assert err.startswith("snnc: error: --max-strength names layer 'nope', which the network "
                          "does not have; its spiking layers are: 0")
    assert "two values for all layers" in error_of(
        capsys, ["compile", str(d / "net.pt2"), "--bits", "4", "--calib", str(d / "calib.npz"),
                 "-S", "7,8", "-o", str(d / "o3")])
    assert main(["compile", "--help"]) == 0
    assert "7,conv1=3,fc1=15" in capsys.readouterr().out


def test_cnn_demo_command(tmp_path, capsys, monkeypatch):
    """The table's layout and the bundle; the accuracy bars are in tests/models."""
    import snnc.models.digits_cnn as cnn
    quick = cnn.train_digits_cnn(0, epochs=1)
    monkeypatch.setattr(cnn, "train_digits_cnn", lambda seed=0: quick)
    assert main(["demo", "--model", "cnn", "--out", str(tmp_path), "--rtl-samples", "0",
                 "-T", "3", "--bits", "8"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:1] == ["bits"])
    assert lines[head].split() == ["bits", "T=1", "T=2", "T=3", "T=4", "T=8"]
    assert [line.split()[0] for line in lines[head + 1:head + 4]] == ["8", "4", "2"]
    assert lines[head + 1].split()[3].startswith("*")            # 8-bit at T=3: the bundle's
    assert "8-bit, T=3: SNN reference test accuracy" in out and "RTL check skipped" in out
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.meta["bits"] == 8 and bundle.graph.timesteps == 3
    assert (tmp_path / "digits_cnn.pt2").is_file() and (tmp_path / "test.npz").is_file()


def test_spike_count_readout(model_files, capsys):
    """--readout spike-count: the last layer spikes and the prediction is its strongest neuron."""
    from snnc.ir import Readout
    d = model_files
    assert main(["compile", str(d / "net.pt2"), "--bits", "8", "--calib", str(d / "calib.npz"),
                 "-T", "6", "--readout", "spike-count", "-o", str(d / "sc")]) == 0
    assert "readout (spike count)" not in capsys.readouterr().err
    bundle = load_bundle(d / "sc")
    g = bundle.graph
    assert g.readout is Readout.SPIKE_COUNT and all(p.spiking for p in g.populations)
    assert bundle.meta["readout"] == "spike_count"
    x = quantize_inputs(np.load(d / "calib.npz")["x"], bundle.meta)
    r = run(g, x)
    totals = r.spikes[-1].sum(axis=0)
    assert np.array_equal(r.prediction, np.argmax(totals, axis=1))
    assert error_of(capsys, ["compile", str(d / "net.pt2"), "--bits", "8", "--calib",
                             str(d / "calib.npz"), "--readout", "votes", "-o", str(d / "x")])


# ---------------------------------------------------------------------------------------------
# First use: every flag and output path is checked before any work; no traceback (issue 7)


@pytest.fixture
def cnn_files(tmp_path):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3)).eval()
    torch.export.save(torch.export.export(model, (torch.zeros(2, 1, 6, 6),)), tmp_path / "cnn.pt2")
    x = np.random.default_rng(1).random((24, 1, 6, 6))
    y = model(torch.from_numpy(x).float()).argmax(dim=1).numpy()
    np.savez(tmp_path / "calib.npz", x=x, y=y)
    return tmp_path


def test_cycle_accurate_simulation_of_image_inputs(cnn_files, capsys):
    """Defect 1: --cycle-accurate on a model whose input is an image (C, H, W)."""
    d = cnn_files
    assert main(["compile", str(d / "cnn.pt2"), "--bits", "8", "--calib", str(d / "calib.npz"),
                 "-T", "2", "-o", str(d / "out")]) == 0
    capsys.readouterr()
    assert main(["simulate", str(d / "out"), "--data", str(d / "calib.npz"), "--cycle-accurate",
                 "--json", str(d / "c.json")]) == 0
    captured = capsys.readouterr()
    assert "cycles per inference" in captured.out and "Traceback" not in captured.err
    assert json.loads((d / "c.json").read_text())["cycle_accurate"]["samples"] == 24


def compile_args(d, out):
    return ["compile", str(d / "net.pt2"), "--bits", "4", "--calib", str(d / "calib.npz"),
            "-o", str(out)]


def test_output_directory_is_checked_before_compiling(model_files, capsys):
    """Defects 3, 4, 11: -o a file, an unwritable place, "", or a non-empty directory that is
    not a bundle. The check comes first: a missing model file is not even looked at."""
    d = model_files
    (d / "existing_file.txt").write_text("mine")
    missing_model = ["compile", str(d / "nope.pt2"), "--bits", "4", "--calib",
                     str(d / "calib.npz"), "-o"]
    err = error_of(capsys, missing_model + [str(d / "existing_file.txt")])
    assert "existing_file.txt exists and is not a directory" in err
    assert (d / "existing_file.txt").read_text() == "mine"
    err = error_of(capsys, missing_model + ["/proc/snnc-no-such-dir/out"])
    assert "is not writable" in err
    assert "bundle directory name is empty" in error_of(capsys, missing_model + [""])
    (d / "project").mkdir()
    (d / "project" / "core.v").write_text("my own verilog")
    err = error_of(capsys, missing_model + [str(d / "project")])
    assert "not empty and is not an snnc bundle" in err and "core.v" in err
    assert (d / "project" / "core.v").read_text() == "my own verilog"
    assert sorted(p.name for p in (d / "project").iterdir()) == ["core.v"]


def test_json_output_is_checked_before_running(model_files, capsys):
    """Defect 5: --json naming a directory or an unwritable place fails before the run."""
    d = model_files
    assert main(compile_args(d, d / "out")) == 0
    capsys.readouterr()
    (d / "adir").mkdir()
    for cmd in (["simulate", str(d / "out"), "--data", str(d / "calib.npz")],
                ["verify", str(d / "out")]):
        for target, message in ((d / "adir", "is a directory"),
                                (Path("/proc/snnc-no-such-dir/r.json"), "is not writable")):
            assert main(cmd + ["--json", str(target)]) == 2
            captured = capsys.readouterr()
            assert message in captured.err and "Traceback" not in captured.err
            assert captured.out == "", "the check must come before any work"


def test_verify_flags_are_checked_first(model_files, capsys):
    """Defect 6 (--seed -5) and the other verify flags, before the bundle is even read."""
    d = model_files
    for flags, message in ((["--seed", "-5"], "--seed must be >= 0, not -5"),
                           (["-T", "0"], "--timesteps must be an integer in 1..4096"),
                           (["-T", "99999999999"], "--timesteps must be an integer in 1..4096"),
                           (["--samples", "0"], "--samples must be in 1..100,000, not 0"),
                           (["--samples", "99999999999"], "--samples must be in 1..100,000")):
        assert message in error_of(capsys, ["verify", str(d / "not-yet"), *flags])


@pytest.mark.parametrize("value", ["0", "nan", "-3", "inf"])
def test_clock_is_checked_before_simulating(model_files, capsys, value):
    """Defect 15: --clock-mhz 0/nan/inf is refused before the simulation runs."""
    d = model_files
    assert main(compile_args(d, d / "out")) == 0
    capsys.readouterr()
    assert main(["simulate", str(d / "out"), "--data", str(d / "calib.npz"), "--cycle-accurate",
                 "--clock-mhz", value]) == 2
    captured = capsys.readouterr()
    assert "--clock-mhz must be a positive number" in captured.err and captured.out == ""


def test_incomplete_and_mixed_bundles_are_refused(model_files, capsys):
    """Defects 7 and 10: a bundle without core.v, without mem/, or with files from another
    compile is refused by simulate and verify, naming the file."""
    import shutil
    d = model_files
    assert main(compile_args(d, d / "a")) == 0
    assert main(["compile", str(d / "net.pt2"), "--bits", "8", "--calib", str(d / "calib.npz"),
                 "-o", str(d / "b")]) == 0
    capsys.readouterr()
    cases = {"core.v": lambda b: (b / "core.v").unlink(),
             "mem": lambda b: shutil.rmtree(b / "mem"),
             "mem/wgt.hex": lambda b: shutil.copy(d / "b" / "mem" / "wgt.hex", b / "mem")}
    for name, damage in cases.items():
        b = d / f"case-{name.replace('/', '-')}"
        shutil.copytree(d / "a", b)
        damage(b)
        for cmd in (["simulate", str(b), "--data", str(d / "calib.npz")], ["verify", str(b)]):
            err = error_of(capsys, cmd)
            assert name in err and "recompile" in err, (name, err)


def test_ctrl_c_at_startup_is_clean(tmp_path):
    """Ctrl-C while snnc starts (importing torch) ends without a traceback."""
    import os
    import signal
    import time
    proc = subprocess.Popen([sys.executable, "-m", "snnc", "compile", "m.pt2", "--bits", "4",
                             "-o", str(tmp_path / "o")], stderr=subprocess.PIPE,
                            start_new_session=True)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert b"Traceback" not in err, err.decode()


def test_cache_command_shows_and_clears_the_rtl_build_cache(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SNNC_CACHE", str(tmp_path / "c"))
    assert main(["cache"]) == 0
    assert "0 build(s), 0.0 MB" in capsys.readouterr().out
    for key in ("aa", "bb"):
        (tmp_path / "c" / "rtl" / key).mkdir(parents=True)
        (tmp_path / "c" / "rtl" / key / "obj").write_bytes(b"x" * 300_000)
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'c' / 'rtl'}: 2 build(s), 0.6 MB" in out
    assert main(["cache", "--clear"]) == 0
    assert "removed 2 cached RTL build(s), 0.6 MB" in capsys.readouterr().out
    assert list((tmp_path / "c" / "rtl").iterdir()) == []


def test_nan_weights_are_named(tmp_path, capsys):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    with torch.no_grad():
        model[0].weight[1, 2] = float("nan")
    torch.export.save(torch.export.export(model, (torch.zeros(2, 6),)), tmp_path / "nan.pt2")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).random((8, 6)))
    err = error_of(capsys, ["compile", str(tmp_path / "nan.pt2"), "--bits", "4", "--calib",
                            str(tmp_path / "calib.npz"), "-o", str(tmp_path / "out")])
    assert err.startswith("snnc: error: layer '0' has 1 NaN/inf weight value: ")


def test_two_input_pt2_is_described_in_the_users_terms(tmp_path, capsys):
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 3)

        def forward(self, image, mask):
            return self.fc(image * mask)

    ep = torch.export.export(TwoInputs().eval(), (torch.rand(2, 6), torch.rand(2, 6)))
    torch.export.save(ep, tmp_path / "two.pt2")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).random((8, 6)))
    err = error_of(capsys, ["compile", str(tmp_path / "two.pt2"), "--bits", "4", "--calib",
                            str(tmp_path / "calib.npz"), "-o", str(tmp_path / "out")])
    assert err.startswith("snnc: error: the exported model's forward takes 2 inputs (image, mask)")
    assert "GraphModule" not in err


def test_compile_reports_snn_accuracy_and_warnings(model_files, capsys):
    d = model_files
    x = np.load(d / "calib.npz")["x"]
    np.savez(d / "bad_labels.npz", x=x, y=np.arange(len(x)) % 7)
    assert main(["compile", str(d / "net.pt2"), "--bits", "8", "--calib", str(d / "calib.npz"),
                 "-o", str(d / "out")]) == 0
    captured = capsys.readouterr()
    assert "  SNN accuracy on the calibration set: " in captured.out
    assert "(float 100.00%)" in captured.out
    assert main(["compile", str(d / "net.pt2"), "--bits", "8", "--calib",
                 str(d / "bad_labels.npz"), "-o", str(d / "out2")]) == 0
    err = capsys.readouterr().err
    assert "snnc: warning: the calibration labels go up to 6, but the readout has 3 classes" in err
    assert load_bundle(d / "out2").meta["warnings"]


def test_demo_refuses_an_empty_out(tmp_path, capsys, monkeypatch):
    """`--out ""` would mean the current directory: refused before any training."""
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--out", ""]) == 2
    assert "directory name is empty" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_simulate_splits_long_runs_into_smaller_batches_with_the_same_results(monkeypatch):
    """Long runs take fewer samples per reference call (batch_limit); the results are those of
    one call."""
    from snnc.cli import simulate
    from snnc.sim import reference
    from snnc.testing import random_graph, random_inputs
    rng = np.random.default_rng(5)
    g = random_graph(rng)
    x = random_inputs(rng, g, 12)
    whole = simulate(g, x, timesteps=6, progress=False)
    monkeypatch.setattr(reference, "BATCH_BYTES", 48 * 6 * (g.input.size + sum(
        p.size for p in g.populations)) * 5)          # 5 samples per call
    assert reference.batch_limit(g, 6) == 5
    calls = []
    real_run = reference.run
    monkeypatch.setattr(reference, "run", lambda *a, **k: calls.append(len(a[1])) or real_run(*a, **k))
    split = simulate(g, x, timesteps=6, progress=False)
    assert calls == [5, 5, 2]
    assert all(np.array_equal(whole[k], split[k]) for k in whole)


def test_conv_lists_option_is_recorded_and_followed_by_the_cycle_model(cnn_files, capsys):
    """--conv-lists class (default) and channel: the manifest records the layout, the images
    follow it, and simulate --cycle-accurate counts the walk of that layout."""
    from snnc.hw.mapping import map_graph
    from snnc.sim.core import CoreModel
    d = cnn_files
    cycles = {}
    for layout in ("class", "channel", None):
        out = d / f"out-{layout}"
        extra = [] if layout is None else ["--conv-lists", layout]
        assert main(["compile", str(d / "cnn.pt2"), "--bits", "8", "--calib",
                     str(d / "calib.npz"), "-T", "2", "-o", str(out), *extra]) == 0
        bundle = load_bundle(out)
        assert bundle.conv_lists == bundle.core["conv_lists"] == (layout or "class")
        image = map_graph(bundle.graph, bundle.conv_lists)
        assert bundle.core["usage"]["synapse_entries"] == image.n_entries
        capsys.readouterr()
        assert main(["simulate", str(out), "--data", str(d / "calib.npz"), "--cycle-accurate",
                     "--json", str(d / "c.json")]) == 0
        doc = json.loads((d / "c.json").read_text())
        x = quantize_inputs(np.load(d / "calib.npz")["x"], bundle.meta).reshape(24, -1)
        model = CoreModel(CoreParams(**bundle.core["params"])).run(image, x, 2)
        assert doc["cycle_accurate"]["cycles_mean"] == float(model.cycles.mean())
        cycles[layout] = doc["cycle_accurate"]["cycles_mean"]
    assert cycles["class"] == cycles[None] < cycles["channel"]
    assert "'class', 'channel'" in error_of(capsys, ["compile", str(d / "cnn.pt2"), "--bits", "8",
                                                    "--conv-lists", "row", "-o", str(d / "x")])


def test_input_walk_option_and_the_core_synops_report(model_files, capsys):
    """--input-walk once (default) gives the core an input-current memory for the neurons the
    input feeds; the cycle-accurate report gives the SOPs the core does beside the reference's
    count, and fewer cycles; every-timestep has no such memory and the two counts agree."""
    d = model_files
    docs = {}
    for walk in ("once", "every-timestep"):
        out = d / f"out-{walk}"
        assert main(["compile", str(d / "net.pt2"), "--bits", "8", "--calib", str(d / "calib.npz"),
                     "--input-walk", walk, "-o", str(out)]) == 0
        bundle = load_bundle(out)
        first = bundle.graph.populations[0].size
        assert bundle.core["params"]["input_current_depth"] == (first if walk == "once" else 0)
        capsys.readouterr()
        assert main(["simulate", str(out), "--data", str(d / "calib.npz"), "--cycle-accurate",
                     "--json", str(d / "c.json")]) == 0
        text = capsys.readouterr().out
        docs[walk] = json.loads((d / "c.json").read_text())["cycle_accurate"]
        assert "synaptic operations the core does: " in text
        assert ("the core walks the input once" in text) == (walk == "once")
    once, every = docs["once"], docs["every-timestep"]
    assert every["synops_core_mean"] == every["synops_reference_mean"] == once["synops_reference_mean"]
    assert once["synops_core_mean"] < once["synops_reference_mean"]
    assert once["cycles_mean"] < every["cycles_mean"]


def test_lanes_option_end_to_end(model_files, capsys):
    """--lanes 4: the bundle's core has four lanes (banked memories, interleaved weight image);
    the cycle-accurate report gives fewer cycles, the same SOPs and predictions, the lanes and
    the bank stalls; verify runs the bundle's own core.v and images on Icarus bit for bit."""
    from tests.rtl.conftest import require
    d = model_files
    docs = {}
    for lanes in (1, 4):
        out = d / f"out-{lanes}"
        assert main(["compile", str(d / "net.pt2"), "--bits", "4", "--calib", str(d / "calib.npz"),
                     "--lanes", str(lanes), "-o", str(out)]) == 0
        assert load_bundle(out).core["params"]["lanes"] == lanes
        assert ("synapse lanes: 4; neuron n in membrane bank" in capsys.readouterr().out) == \
            (lanes == 4)
        assert ("tgt3_mem" in (out / "core.v").read_text()) == (lanes == 4)
        capsys.readouterr()
        assert main(["simulate", str(out), "--data", str(d / "calib.npz"), "--cycle-accurate",
                     "--json", str(d / "c.json")]) == 0
        text = capsys.readouterr().out
        docs[lanes] = json.loads((d / "c.json").read_text())
        assert ("membrane-bank conflicts" in text) == (lanes == 4)
    one, four = docs[1], docs[4]
    assert one["predictions"] == four["predictions"]
    assert one["cycle_accurate"]["synops_core_mean"] == four["cycle_accurate"]["synops_core_mean"]
    assert four["cycle_accurate"]["cycles_mean"] < one["cycle_accurate"]["cycles_mean"]
    assert four["cycle_accurate"]["lanes"] == 4
    require("icarus")
    assert main(["verify", str(d / "out-4"), "--samples", "3", "--simulator", "icarus",
                 "--json", str(d / "v.json")]) == 0
    rep = json.loads((d / "v.json").read_text())
    assert rep["all_exact"] and len(rep["samples"]) == 3
    assert "--lanes" in error_of(capsys, ["compile", str(d / "net.pt2"), "--lanes", "3",
                                          "-o", str(d / "x")])


def test_pruned_model_compiles_and_verifies_on_the_rtl(model_files, capsys):
    """--prune 0.6 without --calib: the compile report gives the pruned layers, the bundle has
    fewer synapses than the unpruned one, and verify runs it on Icarus bit for bit."""
    from tests.rtl.conftest import require
    d = model_files
    assert main(["compile", str(d / "net.pt2"), "--bits", "4", "-o", str(d / "full")]) == 0
    assert main(["compile", str(d / "net.pt2"), "--bits", "4", "--prune", "0.6",
                 "-o", str(d / "sparse")]) == 0
    assert "pruned to 60.0% zeros (layer)" in capsys.readouterr().out
    full = json.loads((d / "full" / "manifest.json").read_text())
    sparse = json.loads((d / "sparse" / "manifest.json").read_text())
    assert sum(sparse["core"]["usage"]["memory_bits"].values()) < \
        sum(full["core"]["usage"]["memory_bits"].values())
    require("icarus")
    assert main(["verify", str(d / "sparse"), "--data", str(d / "calib.npz"), "--samples", "4",
                 "--simulator", "icarus", "--json", str(d / "v.json")]) == 0
    rep = json.loads((d / "v.json").read_text())
    assert rep["all_exact"] and len(rep["samples"]) == 4


def test_mixed_precision_compiles_and_verifies_on_the_rtl(model_files, capsys):
    """--bits 2 --bits-override with the last layer at 8 bits: the report shows both widths,
    and the core (one width per source population, each its own) runs it bit for bit."""
    from tests.rtl.conftest import require
    d = model_files
    capsys.readouterr()
    assert main(["compile", str(d / "net.pt2"), "--bits", "2", "--calib", str(d / "calib.npz"),
                 "-o", str(d / "plain")]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()
             if "readout" in line and "integrator" in line]
    assert len(names) == 1
    assert main(["compile", str(d / "net.pt2"), "--bits", "2", "--bits-override",
                 f"{names[0]}=8", "--calib", str(d / "calib.npz"), "-o", str(d / "mixed")]) == 0
    out = capsys.readouterr().out
    assert "dense 2-bit" in out and "dense 8-bit" in out, out
    manifest = json.loads((d / "mixed" / "manifest.json").read_text())
    assert manifest["meta"]["bits_override"] == {names[0]: 8}
    assert "--bits-override" in error_of(capsys, ["compile", str(d / "net.pt2"), "--bits", "2",
                                                  "--bits-override", "nope=8", "-o", str(d / "x")])
    require("icarus")
    assert main(["verify", str(d / "mixed"), "--data", str(d / "calib.npz"), "--samples", "4",
                 "--simulator", "icarus", "--json", str(d / "v.json")]) == 0
    assert json.loads((d / "v.json").read_text())["all_exact"]
