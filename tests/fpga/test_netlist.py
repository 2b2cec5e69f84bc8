"""`snnc verify --netlist`: the core's iCE40 gate-level netlist (yosys synth_ice40) runs the same
cocotb job and the same bit-exact comparison as the RTL."""

import json

import numpy as np
import pytest

import snnc.fpga.netlist as netlist_mod
from snnc.cli import main
from snnc.compiler.bundle import write_bundle
from snnc.fpga.netlist import SYNTH_SCRIPT, SynthesisFailed, synthesize_ice40, yosys_version
from snnc.testing import random_conv_graph, random_graph
from tests.rtl.conftest import require

pytestmark = pytest.mark.verilator


@pytest.fixture
def icarus():
    """Gate-level netlists run under Icarus (a Verilator build of one takes minutes)."""
    require("icarus")
    return "icarus"


def small_mlp(seed):
    return random_graph(np.random.default_rng(seed), max_in=6, max_size=6, max_hidden=1,
                        timesteps=2)


def verify_netlist(bundle, tmp_path, capsys, seed, *extra):
    code = main(["verify", str(bundle), "--netlist", "--seed", str(seed), "--stall", "0.25",
                 "--json", str(tmp_path / "r.json"), *extra])
    return code, capsys.readouterr().out, json.loads((tmp_path / "r.json").read_text())


def test_mlp_netlist_is_bit_exact(icarus, tmp_path, capsys, seed):
    write_bundle(tmp_path / "b", small_mlp(seed))
    code, out, doc = verify_netlist(tmp_path / "b", tmp_path, capsys, seed, "--samples", "4")
    assert code == 0, out
    assert "netlist (icarus, synth_ice40) vs reference: 4/4 samples bit-exact -> BIT-EXACT" in out
    assert doc["netlist"] is True and doc["simulator"] == "icarus" and doc["all_exact"]
    assert doc["yosys"] == yosys_version() and doc["synthesis"] == list(SYNTH_SCRIPT)
    assert all(s["cycles"] == s["rtl_active_cycles"] for s in doc["samples"])


def test_conv_maxpool_netlist_is_bit_exact(icarus, tmp_path, capsys, seed):
    write_bundle(tmp_path / "b", random_conv_graph(np.random.default_rng(seed), max_hw=4,
                                                   timesteps=2))
    code, out, doc = verify_netlist(tmp_path / "b", tmp_path, capsys, seed, "--samples", "1")
    assert code == 0, out
    assert "BIT-EXACT" in out and doc["netlist"] and doc["all_exact"]


def test_a_wrong_netlist_is_a_mismatch(icarus, tmp_path, capsys, monkeypatch):
    """The netlist, not the RTL, is what runs: a netlist whose readback bit 0 is inverted (the
    gates renamed, a wrapper flipping ``rb_data[0]``) must fail on membranes and counters."""
    real = netlist_mod.synthesize_ice40

    monkeypatch.setattr(netlist_mod, "synthesize_ice40", lambda v: readback_inverted(real(v)))
    write_bundle(tmp_path / "b", small_mlp(7))
    code, out, doc = verify_netlist(tmp_path / "b", tmp_path, capsys, 7, "--samples", "2")
    assert code == 1, out
    assert "netlist (icarus, synth_ice40) vs reference: 0/2 samples" in out and "MISMATCH" in out
    assert "active cycles: expected" in out and not doc["all_exact"]


def test_synthesis_is_cached_and_its_errors_are_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("SNNC_CACHE", str(tmp_path / "cache"))
    tiny = ("module snnc_core(input clk, input a, output reg q);\n"
            "  always @(posedge clk) q <= ~a;\nendmodule\n")
    gates = synthesize_ice40(tiny)
    assert "SB_DFF" in gates and "SB_LUT4" in gates
    [cached] = (tmp_path / "cache" / "rtl").glob("ice40-*/netlist.v")
    cached.write_text(gates + "// from the cache\n")
    assert synthesize_ice40(tiny).endswith("// from the cache\n")
    with pytest.raises(SynthesisFailed, match=r"(?s)could not synthesize.*ERROR"):
        synthesize_ice40("module snnc_core(input clk; endmodule\n")


def readback_inverted(gates: str) -> str:
    """``gates`` with its module renamed and a wrapper ``snnc_core`` around it that inverts bit 0
    of ``rb_data`` (the membrane and counter readback)."""
    import re
    assert gates.count("module snnc_core(") == 1
    ports = re.findall(r"^  (input|output) (\[\d+:0\] )?(\w+);$", gates, flags=re.M)
    assert ("output", "[31:0] ", "rb_data") in ports, ports
    names = [name for _, _, name in ports]
    conns = ", ".join(f".{n}({'rb' if n == 'rb_data' else n})" for n in names)
    return (gates.replace("module snnc_core(", "module snnc_core_gates(")
            + f"\nmodule snnc_core({', '.join(names)});\n"
            + "".join(f"  {d} {w}{n};\n" for d, w, n in ports)
            + f"  wire [31:0] rb;\n  snnc_core_gates gates({conns});\n"
            + "  assign rb_data = rb ^ 32'd1;\nendmodule\n")
