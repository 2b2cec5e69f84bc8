"""The ``sync`` clock domain from a PLL (the Amaranth side of :mod:`snnc.fpga.clock`).

Without a PLL the platform makes the ``sync`` domain itself from its default clock
(``create_missing_domain``). With one, the top level adds :meth:`PllDomain.domain` (``sync``)
itself, so the platform never makes it (no second driver of the clock), and
:class:`PllDomain` drives its clock and reset; like the platform it requests the board's clock
resource itself (``platform.default_clk``, ``dir="-"``):

* **iCE40**: ``SB_PLL40_PAD`` takes the oscillator pin as its ``PACKAGEPIN`` and drives
  ``PLLOUTGLOBAL``. The iCEBreaker's 12 MHz pin 35 is the UP5K PLL's own pad: nextpnr refuses
  ``SB_PLL40_CORE`` fed through an input buffer on that pin ("PLL bel 'X12/Y31/pll_3' cannot be
  used as it conflicts with input ... on pin '35'"). ``sync`` is reset until
  ``LOCK`` and then for 15 us more, as the platform's own power-on reset does (iCE40 block RAM
  reads zeroes for about 3 us after configuration): a ``ResetSynchronizer`` on ``~LOCK``
  resets a small counter in the PLL's clock, and ``sync``'s reset is "counter not done".
* **ECP5**: ``EHXPLLL`` with its CLKOP fed back (``FEEDBK_PATH="CLKOP"``) takes the oscillator
  through an input buffer. ``sync`` is reset-less, as the platform makes it: the global
  set/reset (``SGSR``) holds every flip-flop until two flip-flops in the PLL's clock have seen
  ``LOCK``.

nextpnr times ``sync`` at the clock the design really runs at without a constraint of ours: the
platform constrains the oscillator pin (amaranth-boards' ``Clock``), and nextpnr derives the PLL
output's constraint from it and the PLL's parameters ("Derived frequency constraint of 24.0 MHz
for net clk"); ``snnc build`` reads that constraint back from nextpnr's report.
"""

from __future__ import annotations

from amaranth.hdl import ClockDomain, ClockSignal, Const, Elaboratable, Instance, Module, Signal
from amaranth.hdl import ResetSignal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from .clock import PLL_FAMILIES, ClockPlan, mhz_text

__all__ = ["PllDomain", "POR_SECONDS"]

#: How long ``sync`` stays in reset after LOCK on the iCE40 (the platform's own figure).
POR_SECONDS = 15e-6


class PllDomain(Elaboratable):
    """Drive the ``sync`` clock domain at ``plan.achieved`` MHz from ``plan.pll``; the parent
    module adds :meth:`domain` (Amaranth wants a domain defined where it is used or above).

    ``primitive`` and ``parameters`` are the PLL ``Instance``'s cell type and parameters (what
    the tests compare with the solver's).
    """

    def __init__(self, plan: ClockPlan):
        if plan.pll is None:
            raise ValueError("PllDomain needs a clock plan with a PLL")
        self.plan = plan
        self.primitive = PLL_FAMILIES[plan.family].primitive
        self.parameters = dict(plan.pll.parameters)
        self._sync = ClockDomain("sync", reset_less=plan.family == "ecp5")
        self.clk = self._sync.clk
        self.lock = Signal(name="pll_lock")

    def domain(self) -> ClockDomain:
        """The ``sync`` domain this drives (reset-less on the ECP5, as the platform makes it)."""
        return self._sync

    def elaborate(self, platform):
        m = Module()
        clk_io = platform.request(platform.default_clk, dir="-")
        params = {f"p_{k}": v for k, v in self.parameters.items()}
        if self.plan.family == "ice40":
            m.submodules.pll = Instance(
                self.primitive, **params,
                i_PACKAGEPIN=clk_io.io, i_RESETB=Const(1), i_BYPASS=Const(0),
                o_PLLOUTGLOBAL=self.clk, o_LOCK=self.lock)
            m.submodules.por = _PowerOnReset(self.lock, self.plan.achieved)
        else:
            m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_io)
            # The loop-filter settings nextpnr would otherwise leave at 0, as prjtrellis's
            # ecppll writes them; the FREQUENCY_PIN_* attributes document the clocks.
            attrs = {"a_ICP_CURRENT": "12", "a_LPF_RESISTOR": "8",
                     "a_MFG_ENABLE_FILTEROPAMP": "1", "a_MFG_GMCREF_SEL": "2",
                     "a_FREQUENCY_PIN_CLKI": mhz_text(self.plan.oscillator),
                     "a_FREQUENCY_PIN_CLKOP": mhz_text(self.plan.achieved)}
            m.submodules.pll = Instance(
                self.primitive, **params, **attrs, p_CLKOP_ENABLE="ENABLED",
                i_CLKI=clk_buf.i, i_CLKFB=self.clk, i_RST=Const(0), i_STDBY=Const(0),
                i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(1),
                i_PHASESTEP=Const(1), i_PHASELOADREG=Const(1), i_PLLWAKESYNC=Const(0),
                i_ENCLKOP=Const(0), o_CLKOP=self.clk, o_LOCK=self.lock)
            m.submodules.gsr = _GlobalReset(self.lock)
        return m


class _PowerOnReset(Elaboratable):
    """iCE40: ``sync`` is reset while ``lock`` is low and for ``POR_SECONDS`` after it rises.

    A ``ResetSynchronizer`` asserts the reset of a local domain (in the PLL's clock) at once
    when ``lock`` falls and releases it two cycles after ``lock`` rises; in that domain a counter
    then runs for ``POR_SECONDS`` and sets ``ready``; ``sync``'s reset is ``~ready``.
    """

    def __init__(self, lock: Signal, mhz):
        self.lock = lock
        self.delay = max(1, int(POR_SECONDS * float(mhz) * 1e6))

    def elaborate(self, platform):
        m = Module()
        m.domains.pll_por = ClockDomain("pll_por", local=True)
        m.d.comb += ClockSignal("pll_por").eq(ClockSignal("sync"))
        m.submodules.lock_sync = ResetSynchronizer(~self.lock, domain="pll_por")
        timer = Signal(range(self.delay + 1))
        ready = Signal()
        with m.If(timer == self.delay):
            m.d.pll_por += ready.eq(1)
        with m.Else():
            m.d.pll_por += timer.eq(timer + 1)
        m.d.comb += ResetSignal("sync").eq(~ready)
        return m


class _GlobalReset(Elaboratable):
    """ECP5: the global set/reset holds every flip-flop until two flip-flops in the PLL's clock
    (``FD1S3AX``, cleared at configuration, not themselves on the global reset) have seen
    ``lock``; the same cells as the platform's own reset, with ``lock`` as the input."""

    def __init__(self, lock: Signal):
        self.lock = lock

    def elaborate(self, platform):
        m = Module()
        clk, gsr0, gsr1 = ClockSignal("sync"), Signal(), Signal()
        m.submodules += [
            Instance("FD1S3AX", p_GSR="DISABLED", i_CK=clk, i_D=self.lock, o_Q=gsr0),
            Instance("FD1S3AX", p_GSR="DISABLED", i_CK=clk, i_D=gsr0, o_Q=gsr1),
            Instance("SGSR", i_CLK=clk, i_GSR=gsr1),
        ]
        return m
