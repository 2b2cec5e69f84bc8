"""The PLL solver (snnc.fpga.clock) against a brute-force search over every parameter setting."""

import random
from fractions import Fraction

import numpy as np
import pytest

from snnc.compiler.errors import SnncError
from snnc.fpga.clock import (ClockPlan, clock_arg, mhz_text, plan_clock, pll_outputs,
                             solve_pll)

MHZ = 10**6

#: (family, oscillator MHz): the three boards, and an iCE40 input that leaves DIVR > 0 usable.
INPUTS = [("ice40", 12), ("ice40", 100), ("ecp5", 25), ("ecp5", 48)]


def brute_force_ice40(f_in: int) -> set:
    """Every iCE40 output (MHz, exact) over all DIVR, DIVF, DIVQ, checked in integer Hz."""
    f = f_in * MHZ
    outs = set()
    for r in range(16):
        if not 10 * MHZ * (r + 1) <= f <= 133 * MHZ * (r + 1):
            continue
        for d in range(128):
            if not 533 * MHZ * (r + 1) <= f * (d + 1) <= 1066 * MHZ * (r + 1):
                continue
            for q in range(1, 7):
                if 16 * MHZ * (r + 1) * 2**q <= f * (d + 1) <= 275 * MHZ * (r + 1) * 2**q:
                    outs.add(Fraction(f * (d + 1), (r + 1) * 2**q * MHZ))
    return outs


def brute_force_ecp5(f_in: int) -> set:
    """Every ECP5 output (MHz, exact) over all CLKI_DIV, CLKFB_DIV, CLKOP_DIV (128**3 settings),
    checked in integer Hz with numpy."""
    f = f_in * MHZ
    i = np.arange(1, 129, dtype=np.int64)[:, None, None]       # CLKI_DIV
    b = np.arange(1, 129, dtype=np.int64)[None, :, None]       # CLKFB_DIV
    o = np.arange(1, 129, dtype=np.int64)[None, None, :]       # CLKOP_DIV
    ok = ((8 * f >= 25 * MHZ * i)                              # f_pfd >= 3.125 MHz
          & (f <= 400 * MHZ * i)                               # f_pfd <= 400 MHz
          & (8 * f * b >= 25 * MHZ * i) & (f * b <= 400 * MHZ * i)     # f_out in 3.125..400
          & (f * b * o >= 400 * MHZ * i) & (f * b * o <= 800 * MHZ * i))  # f_vco in 400..800
    ii, bb, _ = np.nonzero(ok)
    return {Fraction(f * int(fb + 1), int(ci + 1) * MHZ) for ci, fb in zip(ii, bb)}


@pytest.fixture(scope="module")
def achievable():
    return {(fam, f): sorted(brute_force_ice40(f) if fam == "ice40" else brute_force_ecp5(f))
            for fam, f in INPUTS}


def check_setting(cfg, f_in) -> None:
    """Every constraint holds and the output is the formula's value, exactly."""
    p, f_in = cfg.parameters, Fraction(f_in)
    if cfg.family == "ice40":
        assert p["FEEDBACK_PATH"] == "SIMPLE"
        assert 0 <= p["DIVR"] <= 15 and 0 <= p["DIVF"] <= 127 and 1 <= p["DIVQ"] <= 6
        pfd = f_in / (p["DIVR"] + 1)
        vco = pfd * (p["DIVF"] + 1)
        assert cfg.f_out == f_in * (p["DIVF"] + 1) / ((p["DIVR"] + 1) * 2 ** p["DIVQ"])
        assert 10 <= pfd <= 133 and 533 <= vco <= 1066 and 16 <= cfg.f_out <= 275
        want_filter = 1 if pfd < 17 else 2 if pfd < 26 else 3 if pfd < 44 else \
            4 if pfd < 66 else 5 if pfd < 101 else 6          # icepll's thresholds
        assert p["FILTER_RANGE"] == want_filter
    else:
        assert p["FEEDBK_PATH"] == "CLKOP" and p["CLKOP_CPHASE"] == p["CLKOP_DIV"] - 1
        assert all(1 <= p[k] <= 128 for k in ("CLKI_DIV", "CLKFB_DIV", "CLKOP_DIV"))
        pfd = f_in / p["CLKI_DIV"]
        vco = cfg.f_out * p["CLKOP_DIV"]
        assert cfg.f_out == f_in * p["CLKFB_DIV"] / p["CLKI_DIV"]
        assert Fraction(25, 8) <= pfd <= 400 and 400 <= vco <= 800
        assert Fraction(25, 8) <= cfg.f_out <= 400
    assert (cfg.f_pfd, cfg.f_vco) == (pfd, vco)


@pytest.mark.parametrize("family,f_in", INPUTS)
def test_the_solver_knows_every_output_the_brute_force_finds(family, f_in, achievable):
    outs = pll_outputs(family, f_in)
    assert [c.f_out for c in outs] == achievable[family, f_in]
    for cfg in outs:
        check_setting(cfg, f_in)


@pytest.mark.parametrize("family,f_in", INPUTS)
def test_the_highest_output_at_or_below_the_request(family, f_in, achievable, seed):
    rng = random.Random(f"{seed}-{family}-{f_in}")
    outs = achievable[family, f_in]
    hi = 275 if family == "ice40" else 400
    requests = [Fraction(rng.uniform(float(outs[0]), hi)).limit_denominator(10**6)
                for _ in range(300)]
    requests += rng.sample(outs, min(50, len(outs)))              # exactly achievable
    requests += [f - Fraction(1, 10**9) for f in rng.sample(outs[1:], 20)]   # just below one
    requests += [outs[0], Fraction(hi)]
    for req in requests:
        cfg = solve_pll(family, f_in, req)
        check_setting(cfg, f_in)
        best = max(f for f in outs if f <= req)
        assert cfg.f_out == best <= req, (family, f_in, req)
    # A float request is read as the decimal it prints as, not the binary value below it.
    if family == "ecp5" and f_in == 25:
        assert solve_pll("ecp5", 25, 100 / 3).f_out == Fraction(100, 3)


@pytest.mark.parametrize("family,f_in", INPUTS)
def test_clock_arg_selects_the_output_it_names(family, f_in):
    for cfg in pll_outputs(family, f_in):
        assert solve_pll(family, f_in, float(clock_arg(cfg.f_out))).f_out == cfg.f_out


def test_known_settings():
    cfg = solve_pll("ice40", 12, 24)
    assert cfg.parameters == {"FEEDBACK_PATH": "SIMPLE", "DIVR": 0, "DIVF": 63, "DIVQ": 5,
                              "FILTER_RANGE": 1}
    assert cfg.formula() == "12 MHz * 64 / (1 * 2^5) = 24 MHz"
    assert solve_pll("ice40", 12, 27.1).f_out == 27            # 12 * 72 / 32
    assert solve_pll("ice40", 12, 20).f_out == Fraction(159, 8)   # 19.875 = 12 * 53 / 32
    cfg = solve_pll("ecp5", 25, 100 / 3)
    assert cfg.parameters["CLKI_DIV"] == 3 and cfg.parameters["CLKFB_DIV"] == 4
    assert cfg.f_vco == 600 and cfg.formula() == "25 MHz * 4 / 3 = 100/3 MHz = 33.333333 MHz"
    assert solve_pll("ecp5", 48, 25).f_out == 24                # 25/48 needs f_pfd 1 MHz


@pytest.mark.parametrize("family,f_in,req,message", [
    ("ice40", 12, 300, r"--clock-mhz 300 is above what the PLL can make: the iCE40 PLL's output "
                       r"range is 16\.\.275 MHz; from 12 MHz it makes 16\.125\.\.270 MHz; use "
                       r"--clock-mhz 270 or less"),
    ("ice40", 12, 16, r"--clock-mhz 16 is below what the PLL can make: .* the nearest is "
                      r"16\.125 MHz \(--clock-mhz 16\.125\)"),
    ("ecp5", 25, 400.5, r"above what the PLL can make: the ECP5 PLL's output range is "
                        r"3\.125\.\.400 MHz; .* use --clock-mhz 400 or less"),
    ("ecp5", 48, 3.1, r"below what the PLL can make: .* from 48 MHz it makes 3\.2\.\.400 MHz; "
                      r"the nearest is 3\.2 MHz"),
])
def test_requests_the_pll_cannot_make(family, f_in, req, message):
    with pytest.raises(SnncError, match=message):
        solve_pll(family, f_in, req)


def test_plan_without_request_or_at_the_oscillator_has_no_pll():
    assert plan_clock("ice40", 12) == ClockPlan("ice40", Fraction(12), None, Fraction(12), None)
    for fam, osc in (("ecp5", 25), ("ecp5", 48), ("ice40", 12)):
        plan = plan_clock(fam, osc, float(osc))
        assert plan.pll is None and plan.achieved == osc
    # 14 MHz on the iCEBreaker: the PLL's lowest output is 16.125 MHz, the oscillator is best.
    plan = plan_clock("ice40", 12, 14)
    assert plan.pll is None and plan.achieved == 12 and plan.requested == 14
    plan = plan_clock("ice40", 12, 24.0)
    assert plan.pll == solve_pll("ice40", 12, 24) and plan.achieved == 24
    assert plan.hz == 24_000_000
    assert plan_clock("ecp5", 48, 40).pll.f_out == 40                  # below the oscillator


def test_plan_json_shows_the_arithmetic():
    doc = plan_clock("ecp5", 25, 100 / 3).to_json()
    assert doc["oscillator_mhz"] == 25.0 and doc["achieved_mhz_exact"] == "100/3"
    assert doc["source"] == "pll" and doc["pll"]["primitive"] == "EHXPLLL"
    assert doc["pll"]["worked"] == "25 MHz * 4 / 3 = 100/3 MHz = 33.333333 MHz"
    assert doc["pll"]["formula"] == "f_out = f_in * CLKFB_DIV / CLKI_DIV"
    doc = plan_clock("ice40", 12).to_json()
    assert doc["pll"] is None and doc["requested_mhz"] is None and doc["source"] == "oscillator"
    assert plan_clock("ice40", 12, 24).to_json()["pll"]["primitive"] == "SB_PLL40_PAD"


def test_plan_errors_name_what_the_board_can_do():
    with pytest.raises(SnncError, match=r"--clock-mhz 5 is below every clock the board can run "
                                        r"at: its oscillator is 12 MHz and the iCE40 PLL's lowest "
                                        r"output from it is 16\.125 MHz; use --clock-mhz 12 or "
                                        r"more, or leave --clock-mhz out to run at 12 MHz"):
        plan_clock("ice40", 12, 5)
    with pytest.raises(SnncError, match=r"use --clock-mhz 270 or less"):
        plan_clock("ice40", 12, 1000)
    with pytest.raises(SnncError, match="must be a positive number"):
        plan_clock("ecp5", 25, 0)
    with pytest.raises(SnncError, match="no PLL solver for the FPGA family 'gowin'"):
        plan_clock("gowin", 27, 50)


def test_mhz_text():
    assert [mhz_text(v) for v in (24, Fraction(129, 8), Fraction(100, 3), 12.0)] == \
        ["24", "16.125", "33.333333", "12"]
    assert clock_arg(Fraction(100, 3)) == "33.333334" and clock_arg(24) == "24"
