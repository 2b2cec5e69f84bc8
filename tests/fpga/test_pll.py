"""BoardTop on each board with and without a PLL: elaborated and prepared (no tools run), with
the solver's parameters in the PLL cell and no Amaranth warning of any kind."""

import re
import warnings

import pytest

from snnc.fpga.boards import BOARDS
from snnc.fpga.build import BoardTop, clock_plan
from snnc.fpga.uart import uart_divisor
from snnc.hw.params import CoreParams

SMALL = CoreParams(max_neurons=16, max_sources=16, max_synapses=64)

#: A clock that needs the PLL on each board (one below the oscillator on the OrangeCrab).
PLL_MHZ = {"icebreaker": 24, "ulx3s-85f": 70, "orangecrab-85f": 40}


def _value(text: str):
    if text.startswith('"'):
        return text[1:-1]
    if "'" in text:                                    # a sized constant, 6'000001
        return int(text.split("'")[1], 2)
    return int(text)


def cells(rtlil: str, cell_type: str) -> list[dict]:
    """Every ``cell_type`` cell in an RTLIL text: its parameters, and its connections under
    ``"connect"``."""
    out = []
    for body in re.findall(rf"^\s*cell \\{cell_type} \S+\n(.*?)^\s*end$", rtlil, re.M | re.S):
        cell = {name: _value(value)
                for name, value in re.findall(r"^\s*parameter \\(\w+) (.+)$", body, re.M)}
        cell["connect"] = dict(re.findall(r"^\s*connect \\(\w+) (.+)$", body, re.M))
        out.append(cell)
    return out


def prepare(board_name: str, mhz):
    plat = BOARDS[board_name].platform()
    plan = clock_plan(board_name, mhz)
    top = BoardTop(SMALL, clock=plan)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # deprecations included
        files = plat.prepare(top, name="top").files
    return plan, top, files["top.il"]


@pytest.mark.parametrize("board_name", sorted(BOARDS))
def test_board_top_with_a_pll(board_name):
    plan, top, il = prepare(board_name, PLL_MHZ[board_name])
    assert plan.pll is not None and plan.achieved <= PLL_MHZ[board_name]
    primitive = "SB_PLL40_PAD" if BOARDS[board_name].family == "ice40" else "EHXPLLL"
    (got,) = cells(il, primitive)
    want = dict(plan.pll.parameters)
    assert {k: got[k] for k in want} == want
    assert "LOCK" in got["connect"]
    # The UART divides the PLL's clock, not the oscillator's.
    assert top.host.divisor == uart_divisor(plan.hz, 115200)
    if BOARDS[board_name].family == "ice40":
        # The oscillator pin goes straight to the PLL's pad input, through no SB_IO.
        assert got["connect"]["PACKAGEPIN"].startswith("\\clk12_0__io")
        assert not any(c["connect"]["PACKAGE_PIN"].startswith("\\clk12")
                       for c in cells(il, "SB_IO"))
    else:
        assert len(cells(il, "SGSR")) == 1 and len(cells(il, "FD1S3AX")) == 2


@pytest.mark.parametrize("board_name", sorted(BOARDS))
def test_board_top_without_a_pll_runs_on_the_oscillator(board_name):
    plan, top, il = prepare(board_name, None)
    assert plan.pll is None
    assert not cells(il, "SB_PLL40_PAD") and not cells(il, "EHXPLLL")
    osc_hz = int(BOARDS[board_name].platform().default_clk_frequency)
    assert top.host.divisor == uart_divisor(osc_hz, 115200)
