"""The core with its loaded memories on iCE40 SPRAM (``SB_SPRAM256KA``): gate-level netlists
under Icarus, with yosys's own model of the primitive, bit for bit against the reference."""

import re
import subprocess

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Elaboratable, Module, Signal

from snnc.fpga.memplan import blocks_for
from snnc.fpga.netlist import cell_library, synthesize_ice40
from snnc.hw.core import Core, record_bits
from snnc.hw.mapping import core_params_for, map_graph
from snnc.hw.spram import SPRAMMemory, spram_blocks
from snnc.rtl.verify import run_networks
from snnc.testing import random_conv_graph, random_graph, random_inputs
from tests.rtl.conftest import require


@pytest.fixture
def icarus():
    require("icarus")
    return "icarus"


def test_blocks_by_width_and_depth():
    assert spram_blocks(1280, 30) == 2 and spram_blocks(3244, 20) == 2
    assert spram_blocks(16384, 16) == 1 and spram_blocks(16385, 16) == 2
    assert spram_blocks(20000, 20) == 4 and spram_blocks(10, 8) == 1


def test_only_the_loaded_memories_can_live_on_spram():
    p = core_params_for(map_graph(random_graph(np.random.default_rng(0))), timesteps=2)
    with pytest.raises(ValueError, match="only ptr, tgt, wgt, bias can live on SPRAM, not v"):
        Core(p, spram={"v"})


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_core_on_spram_netlist_is_bit_exact(icarus, seed, kind):
    """The conv case is built as ``snnc build`` builds the demo CNN for the UP5K: the loaded
    memories on SPRAM and the population records in block RAM (``ram_records``).

    yosys keeps a memory of at most 4 words in flip-flops (``memplan.blocks_for``), so the conv
    case draws networks from the seeded generator until the records take a block: 5 or more
    populations."""
    rng = np.random.default_rng(seed)
    while True:
        if kind == "mlp":
            g = random_graph(rng, max_in=8, max_size=8, max_hidden=1, timesteps=2)
        else:
            g = random_conv_graph(rng, max_hw=4, timesteps=2)
        T = g.timesteps
        p = core_params_for(map_graph(g), timesteps=T)
        if kind == "mlp" or blocks_for("iCE40UP5K", p.max_pops, record_bits(p)) > 0:
            break
    v = verilog.convert(Core(p, spram=Core.SPRAM_CAPABLE, ram_records=kind == "conv"),
                        name="snnc_core")
    assert v.count("SB_SPRAM256KA") >= 4
    net = synthesize_ice40(v)
    assert "SB_SPRAM256KA" in net                           # kept as the primitive
    assert ("rec_mem" in v) == (kind == "conv")
    if kind == "conv":
        assert "SB_RAM40_4K" in net                         # the records, on block RAM
    xs = random_inputs(rng, g, 3)
    [(model, mism, got)] = run_networks([(g, xs, T)], p, v, simulator=icarus, seed=seed,
                                        stall=0.2, netlist=True)
    assert mism == [[], [], []], mism


class _Two(Elaboratable):
    """An SPRAM memory of two banks, with plain ports for a Verilog test bench."""

    def __init__(self):
        self.mem = SPRAMMemory(shape=20, depth=20000, name="m")
        w, r = self.mem.write_port(), self.mem.read_port()
        self.ports = [w.addr, w.data, w.en, r.addr, r.data, r.en]

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = self.mem
        return m


def test_two_banks_and_two_columns_under_icarus(icarus, tmp_path, seed):
    """Writes across both banks and both 16-bit columns read back; a read holds while ``en``
    is low (what the core's global stall relies on)."""
    top = _Two()
    (tmp_path / "mem.v").write_text(verilog.convert(top, name="mem", ports=top.ports))
    rng = np.random.default_rng(seed)
    addrs = [int(a) for a in rng.choice(20000, size=24, replace=False)] + [16383, 16384, 0, 19999]
    addrs = list(dict.fromkeys(addrs))
    data = {a: int(rng.integers(0, 1 << 20)) for a in addrs}
    lines = ["`timescale 1ns/1ps", "module tb;", "reg clk = 0; always #5 clk = ~clk;",
             "reg rst = 0;", "reg [14:0] wa = 0, ra = 0; reg [19:0] wd = 0; reg we = 0, re = 0;",
             "wire [19:0] rd;",
             "mem dut(.clk(clk), .rst(rst), .m_waddr(wa), .m_wdata(wd), .m_we(we), .m_raddr(ra),"
             " .m_rdata(rd), .m_re(re));",
             "initial begin"]
    for a, d in data.items():
        lines.append(f"  @(negedge clk); wa = {a}; wd = {d}; we = 1;")
    lines.append("  @(negedge clk); we = 0;")
    for a in data:
        lines.append(f"  @(negedge clk); ra = {a}; re = 1;")
        lines.append("  @(negedge clk); re = 0; ra = 0;")
        lines.append("  @(negedge clk); $display(\"R %0d %0d\", " + str(a) + ", rd);")
    lines += ["  $finish;", "end", "endmodule"]
    (tmp_path / "tb.v").write_text("\n".join(lines) + "\n")
    subprocess.run(["iverilog", "-g2012", "-DNO_ICE40_DEFAULT_ASSIGNMENTS", "-o", "sim",
                    "tb.v", "mem.v", str(cell_library())], cwd=tmp_path, check=True,
                   capture_output=True)
    out = subprocess.run(["vvp", "-n", "sim"], cwd=tmp_path, check=True, capture_output=True,
                         text=True).stdout
    got = {int(a): int(d) for a, d in re.findall(r"R (\d+) (\d+)", out)}
    assert got == data
