"""The FPGA boards ``snnc build`` targets, through amaranth-boards.

Each board names its amaranth-boards platform; the device, the package, the clock and the UART
pins come from the board definition, never from a pin list of ours. The OrangeCrab has no UART on
its USB port, so its UART is put on the Feather header's ``0`` (RX) and ``1`` (TX) pins of the
board's own ``io`` connector, for a 3.3 V USB-serial adapter.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Board", "BOARDS", "board"]


@dataclass(frozen=True)
class Board:
    """One target board: its name, its amaranth-boards platform and what the build needs."""
    name: str
    module: str                 # amaranth_boards module
    platform_class: str
    family: str                 # "ice40" or "ecp5"
    goal_mhz: float             # the Fmax goal for this family (issue 8)
    note: str = ""

    def platform(self):
        """A new amaranth-boards platform object, with a UART where the board has none."""
        import importlib

        cls = getattr(importlib.import_module(f"amaranth_boards.{self.module}"),
                      self.platform_class)
        plat = cls()
        if not any(name == "uart" for name, _ in plat.resources):
            from amaranth.build import Attrs
            from amaranth_boards.resources import UARTResource
            plat.add_resources([UARTResource(0, rx="0", tx="1", conn=("io", 0),
                                             attrs=Attrs(IO_TYPE="LVCMOS33"))])
        return plat


#: The boards, by the name ``snnc build --board`` takes.
BOARDS = {b.name: b for b in (
    Board("icebreaker", "icebreaker", "ICEBreakerPlatform", "ice40", 40.0,
          "iCE40UP5K-SG48; UART through the on-board FTDI (second channel)"),
    Board("ulx3s-85f", "ulx3s", "ULX3S_85F_Platform", "ecp5", 150.0,
          "LFE5U-85F-BG381; UART through the on-board FTDI (US1 port)"),
    Board("orangecrab-85f", "orangecrab_r0_2", "OrangeCrabR0_2_85FPlatform", "ecp5", 150.0,
          "LFE5U-85F-MG285; UART on the Feather header pins 0 (RX) and 1 (TX), 3.3 V"),
)}


def board(name: str) -> Board:
    """The board called ``name``; :class:`~snnc.compiler.errors.SnncError` naming the choices."""
    from ..compiler.errors import SnncError

    try:
        return BOARDS[name]
    except KeyError:
        raise SnncError(f"unknown board {name!r}; snnc builds for: {', '.join(BOARDS)}") from None
