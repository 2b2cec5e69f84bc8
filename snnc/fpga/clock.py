"""The clock a bitstream runs at: the board's oscillator, or a PLL's output (``--clock-mhz``).

Pure Python, exact arithmetic: every frequency is a :class:`fractions.Fraction` of MHz, so the
achieved frequency is the formula's value, not a rounded float, and "at most the request" is an
exact comparison.

The two PLLs (parameter names as the primitives spell them):

* **iCE40** ``SB_PLL40_PAD`` in SIMPLE feedback:
  ``f_out = f_in * (DIVF+1) / ((DIVR+1) * 2**DIVQ)``, with ``f_pfd = f_in / (DIVR+1)`` in
  10..133 MHz, ``f_vco = f_pfd * (DIVF+1)`` in 533..1066 MHz, ``f_out`` in 16..275 MHz,
  DIVR 0..15, DIVF 0..127, DIVQ 1..6, and ``FILTER_RANGE`` from ``f_pfd`` by the thresholds
  icestorm's ``icepll`` uses (below 17, 26, 44, 66, 101 MHz: 1..5; else 6).
* **ECP5** ``EHXPLLL`` with ``FEEDBK_PATH="CLKOP"``:
  ``f_out = f_in * CLKFB_DIV / CLKI_DIV``, with ``f_pfd = f_in / CLKI_DIV`` >= 3.125 MHz,
  ``f_vco = f_out * CLKOP_DIV`` in 400..800 MHz, ``f_out`` in 3.125..400 MHz, each divider
  1..128, and ``CLKOP_CPHASE = CLKOP_DIV - 1`` (no phase shift on the output).

:func:`solve_pll` picks the highest output at or below the request; among parameter sets that
give exactly that output it takes the highest ``f_pfd`` (smallest input divider), then on the
iCE40 the lowest VCO (smallest DIVQ) and on the ECP5 the VCO nearest 600 MHz (then the lower).
:func:`plan_clock` adds the oscillator itself as a candidate, so a request at or just above the
oscillator runs on it without a PLL.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from ..compiler.errors import SnncError

__all__ = ["PLL_FAMILIES", "PllConfig", "ClockPlan", "pll_outputs", "solve_pll", "plan_clock",
           "mhz_text", "clock_arg"]


@dataclass(frozen=True)
class _Family:
    name: str
    primitive: str
    out_min: Fraction           # MHz
    out_max: Fraction
    formula: str


#: The PLL of each FPGA family ``snnc build`` targets.
PLL_FAMILIES = {
    "ice40": _Family("iCE40", "SB_PLL40_PAD", Fraction(16), Fraction(275),
                     "f_in * (DIVF+1) / ((DIVR+1) * 2^DIVQ)"),
    "ecp5": _Family("ECP5", "EHXPLLL", Fraction(25, 8), Fraction(400),
                    "f_in * CLKFB_DIV / CLKI_DIV"),
}


def mhz_text(f) -> str:
    """A frequency in MHz as short text, exact when it has at most 6 decimals: ``24``,
    ``16.125``, ``33.333333`` (for 100/3)."""
    return f"{float(f):.6f}".rstrip("0").rstrip(".")


def clock_arg(f) -> str:
    """The ``--clock-mhz`` value that selects the output ``f``: ``f`` rounded *up* to 6 decimals
    (the solver takes the highest output at or below the request, and no two outputs are within
    1 Hz of each other)."""
    f = Fraction(f)
    up = -((-f * 10**6) // 1)                       # ceil(f * 1e6), exact
    return mhz_text(Fraction(up, 10**6))


@dataclass(frozen=True)
class PllConfig:
    """One PLL setting: the family, the input and output frequencies (MHz) and the primitive's
    parameters (``parameters`` as they are passed to the Amaranth ``Instance``)."""
    family: str
    f_in: Fraction
    f_out: Fraction
    f_pfd: Fraction
    f_vco: Fraction
    parameters: dict

    def formula(self) -> str:
        """The achieved frequency worked out from the parameters, e.g.
        ``12 MHz * 64 / (1 * 2^5) = 24 MHz``."""
        p, f_in = self.parameters, mhz_text(self.f_in)
        if self.family == "ice40":
            text = f"{f_in} MHz * {p['DIVF'] + 1} / ({p['DIVR'] + 1} * 2^{p['DIVQ']})"
        else:
            text = f"{f_in} MHz * {p['CLKFB_DIV']} / {p['CLKI_DIV']}"
        exact = "" if self.f_out.denominator == 1 else f" = {self.f_out} MHz"
        return f"{text}{exact} = {mhz_text(self.f_out)} MHz"

    def to_json(self) -> dict:
        return {"primitive": PLL_FAMILIES[self.family].primitive,
                "parameters": dict(self.parameters),
                "formula": f"f_out = {PLL_FAMILIES[self.family].formula}",
                "worked": self.formula(),
                "f_pfd_mhz": float(self.f_pfd), "f_vco_mhz": float(self.f_vco)}


def _ice40_filter_range(f_pfd: Fraction) -> int:
    for limit, value in ((17, 1), (26, 2), (44, 3), (66, 4), (101, 5)):
        if f_pfd < limit:
            return value
    return 6


def _ice40_settings(f_in: Fraction):
    for divr in range(16):
        f_pfd = f_in / (divr + 1)
        if not 10 <= f_pfd <= 133:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533 <= f_vco <= 1066:
                continue
            for divq in range(1, 7):
                f_out = f_vco / 2 ** divq
                if 16 <= f_out <= 275:
                    yield PllConfig("ice40", f_in, f_out, f_pfd, f_vco, {
                        "FEEDBACK_PATH": "SIMPLE", "DIVR": divr, "DIVF": divf, "DIVQ": divq,
                        "FILTER_RANGE": _ice40_filter_range(f_pfd)})


def _ecp5_settings(f_in: Fraction):
    fam = PLL_FAMILIES["ecp5"]
    for clki in range(1, 129):
        f_pfd = f_in / clki
        if f_pfd < Fraction(25, 8):
            break
        if f_pfd > 400:
            continue
        for clkfb in range(1, 129):
            f_out = f_pfd * clkfb
            if not fam.out_min <= f_out <= fam.out_max:
                continue
            # CLKOP_DIV only sets the VCO, f_vco = f_out * CLKOP_DIV in 400..800 MHz (every
            # output in range has one). Take the one nearest 600 MHz, the lower on a tie.
            lo, hi = max(1, _ceil(400 / f_out)), min(128, int(800 / f_out))
            if lo > hi:
                continue
            near = min(max(int(600 / f_out), lo), hi)
            clkop = min({near, min(near + 1, hi)}, key=lambda d: (abs(f_out * d - 600), d))
            yield PllConfig("ecp5", f_in, f_out, f_pfd, f_out * clkop, {
                "CLKI_DIV": clki, "CLKFB_DIV": clkfb, "CLKOP_DIV": clkop,
                "CLKOP_CPHASE": clkop - 1, "CLKOP_FPHASE": 0, "FEEDBK_PATH": "CLKOP"})


def _ceil(f: Fraction) -> int:
    return -((-f.numerator) // f.denominator)


def _rank(cfg: PllConfig):
    """Larger is preferred among settings with the same output (see the module docstring)."""
    if cfg.family == "ice40":
        return (cfg.f_pfd, -cfg.parameters["DIVQ"])
    return (cfg.f_pfd, -abs(cfg.f_vco - 600), -cfg.f_vco)


@lru_cache(maxsize=16)
def pll_outputs(family: str, f_in: Fraction) -> tuple[PllConfig, ...]:
    """Every output frequency the family's PLL makes from ``f_in`` MHz, ascending, each with its
    preferred setting."""
    _family(family)
    f_in = Fraction(f_in)
    settings = _ice40_settings(f_in) if family == "ice40" else _ecp5_settings(f_in)
    best: dict[Fraction, PllConfig] = {}
    for cfg in settings:
        old = best.get(cfg.f_out)
        if old is None or _rank(cfg) > _rank(old):
            best[cfg.f_out] = cfg
    return tuple(best[f] for f in sorted(best))


def _family(family: str) -> _Family:
    try:
        return PLL_FAMILIES[family]
    except KeyError:
        raise SnncError(f"no PLL solver for the FPGA family {family!r}; snnc knows "
                        f"{', '.join(PLL_FAMILIES)}") from None


def _as_mhz(value) -> Fraction:
    """A request in MHz as an exact Fraction; a float is read as the decimal it prints as
    (33.3 is 333/10, not the binary float just below it)."""
    if isinstance(value, float):
        return Fraction(repr(value))
    return Fraction(value)


def solve_pll(family: str, f_in_mhz, request_mhz) -> PllConfig:
    """The PLL setting whose output is the highest at or below ``request_mhz``.

    :class:`~snnc.compiler.errors.SnncError` when the request is outside the family's output
    range or below the lowest output the PLL makes from ``f_in_mhz``; the message names the
    range and the nearest outputs it does make.
    """
    fam = _family(family)
    f_in, req = _as_mhz(f_in_mhz), _as_mhz(request_mhz)
    outs = pll_outputs(family, f_in)
    if not outs:
        raise SnncError(f"the {fam.name} PLL makes no output from a {mhz_text(f_in)} MHz input")
    lo, hi = outs[0].f_out, outs[-1].f_out
    span = (f"the {fam.name} PLL's output range is {mhz_text(fam.out_min)}.."
            f"{mhz_text(fam.out_max)} MHz; from {mhz_text(f_in)} MHz it makes "
            f"{mhz_text(lo)}..{mhz_text(hi)} MHz")
    if req > fam.out_max:
        raise SnncError(f"--clock-mhz {mhz_text(req)} is above what the PLL can make: {span}; "
                        f"use --clock-mhz {clock_arg(hi)} or less")
    if req < lo:
        raise SnncError(f"--clock-mhz {mhz_text(req)} is below what the PLL can make: {span}; "
                        f"the nearest is {mhz_text(lo)} MHz (--clock-mhz {clock_arg(lo)})")
    return outs[bisect_right(outs, req, key=lambda c: c.f_out) - 1]


@dataclass(frozen=True)
class ClockPlan:
    """The clock a build runs the design at: ``achieved`` MHz, from ``pll`` or (``pll is None``)
    straight from the oscillator."""
    family: str
    oscillator: Fraction
    requested: Fraction | None
    achieved: Fraction
    pll: PllConfig | None

    @property
    def hz(self) -> int:
        """The clock in whole Hz, rounded down (what the UART divisor is computed from: the
        divisor ``hz // baud`` equals the exact ``floor(f / baud)``)."""
        return int(self.achieved * 10**6)

    def to_json(self) -> dict:
        return {"oscillator_mhz": float(self.oscillator),
                "requested_mhz": None if self.requested is None else float(self.requested),
                "achieved_mhz": float(self.achieved),
                "achieved_mhz_exact": str(self.achieved),
                "source": "pll" if self.pll else "oscillator",
                "pll": self.pll.to_json() if self.pll else None}


def plan_clock(family: str, oscillator_mhz, request_mhz=None) -> ClockPlan:
    """The clock for a build: without a request, the oscillator; with one, the highest of the
    oscillator and the PLL's outputs that is at or below it (the oscillator wins a tie, so a
    request equal to it builds no PLL)."""
    osc = _as_mhz(oscillator_mhz)
    if request_mhz is None:
        return ClockPlan(family, osc, None, osc, None)
    req = _as_mhz(request_mhz)
    if req <= 0:
        raise SnncError(f"--clock-mhz must be a positive number of MHz, not {request_mhz}")
    fam = _family(family)
    outs = pll_outputs(family, osc)
    if req > fam.out_max:
        solve_pll(family, osc, req)                 # raises, naming the range
    candidates = [(osc, 1, None)] if osc <= req else []          # the oscillator wins a tie
    if outs and outs[0].f_out <= req:
        pll = solve_pll(family, osc, req)
        candidates.append((pll.f_out, 0, pll))
    if candidates:
        achieved, _, pll = max(candidates, key=lambda c: c[:2])
        return ClockPlan(family, osc, req, achieved, pll)
    lowest = min([osc] + [outs[0].f_out] * bool(outs))
    raise SnncError(
        f"--clock-mhz {mhz_text(req)} is below every clock the board can run at: its oscillator "
        f"is {mhz_text(osc)} MHz"
        + (f" and the {fam.name} PLL's lowest output from it is {mhz_text(outs[0].f_out)} MHz"
           if outs else "")
        + f"; use --clock-mhz {clock_arg(lowest)} or more, or leave --clock-mhz out to run at "
          f"{mhz_text(osc)} MHz")
