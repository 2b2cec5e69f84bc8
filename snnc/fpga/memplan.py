"""Where the core's memories go on a device: block RAM, or (iCE40UP5K) SPRAM.

:func:`plan_memories` counts the block RAM each memory takes the way yosys maps it (the
cheapest aspect ratio of the device's block; memories of at most 4 words or 64 bits become
flip-flops) and, on the UP5K, moves the configuration-loaded memories (``ptr``, ``tgt``,
``wgt``, ``bias``, see :class:`snnc.hw.core.Core`) to the four 256-kbit SPRAM blocks only when the block RAM would
not hold the network, choosing the set that leaves the fewest EBR in use. On the UP5K, whose
5,280 logic cells are the scarcer resource, the population records then move from registers to
block RAM (``Core(ram_records=True)``) when the EBR left over hold them. The count for the
demo MLP on the UP5K is 26 EBR, what nextpnr reports. A plan that cannot fit is refused before
synthesis with the figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import combinations

from ..compiler.errors import SnncError
from ..hw.core import Core, record_bits
from ..hw.params import CoreParams
from ..hw.spram import spram_blocks

__all__ = ["DEVICES", "MemoryPlan", "core_memories", "plan_memories", "blocks_for"]


@dataclass(frozen=True)
class _Device:
    block: str                      # nextpnr's name of the block RAM cell
    aspects: tuple                  # (width, depth) configurations of one block
    blocks: int
    spram: int = 0                  # SB_SPRAM256KA blocks
    ram_records: bool = False       # population records go to spare block RAM (logic is scarce)


#: Block RAM of the devices ``snnc build`` targets.
DEVICES = {
    "iCE40UP5K": _Device("ICESTORM_RAM", ((16, 256), (8, 512), (4, 1024), (2, 2048)), 30, 4,
                         ram_records=True),
    "LFE5U-85F": _Device("DP16KD", ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192),
                                    (1, 16384)), 208),
}


def blocks_for(device: str, depth: int, width: int) -> int:
    """Block RAM cells a ``depth`` x ``width`` memory takes (0: it becomes flip-flops, as yosys
    0.70 maps memories of at most 4 words or 64 bits)."""
    if depth <= 4 or depth * width <= 64:
        return 0
    return min(-(-width // w) * -(-depth // d) for w, d in DEVICES[device].aspects)


def core_memories(params: CoreParams, host_bytes: int = 0) -> dict[str, tuple[int, int]]:
    """``name -> (depth, width)`` of every memory on the chip: the core's and the host
    interface's receive buffer (``host_bytes`` bytes)."""
    from ..compiler.budget import memory_shapes
    mems = {k.removesuffix("_mem"): v for k, v in memory_shapes(params).items()}
    if host_bytes:
        mems["host_buffer"] = (host_bytes, 8)
    return mems


@dataclass(frozen=True)
class MemoryPlan:
    device: str
    spram: frozenset = field(default_factory=frozenset)
    blocks: dict = field(default_factory=dict)         # name -> block RAM cells
    spram_used: int = 0
    ram_records: bool = False       # the population records in block RAM (Core ram_records)

    @property
    def blocks_used(self) -> int:
        return sum(self.blocks.values())

    def as_dict(self) -> dict:
        dev = DEVICES[self.device]
        return {"device": self.device, "block": dev.block, "blocks_estimated": self.blocks_used,
                "blocks_available": dev.blocks, "per_memory": dict(self.blocks),
                "spram": sorted(self.spram), "spram_used": self.spram_used,
                "spram_available": dev.spram, "records_in_block_ram": self.ram_records}


def plan_memories(params: CoreParams, device: str, *, host_bytes: int = 0,
                  board: str = "") -> MemoryPlan:
    """Block RAM (and SPRAM) for a core built from ``params`` on ``device``."""
    if device not in DEVICES:
        raise SnncError(f"no memory model for device {device}")
    dev = DEVICES[device]
    mems = core_memories(params, host_bytes)

    def plan(spram):
        blocks = {k: (0 if k in spram else blocks_for(device, d, w)) for k, (d, w) in mems.items()}
        return MemoryPlan(device, frozenset(spram), blocks,
                          sum(spram_blocks(*mems[k]) for k in spram))

    best = plan(())
    if best.blocks_used > dev.blocks and dev.spram and params.lanes == 1:   # (banks: no SPRAM)
        options = [plan(s) for n in range(1, len(Core.SPRAM_CAPABLE) + 1)
                   for s in combinations(Core.SPRAM_CAPABLE, n)]
        options = [o for o in options if o.spram_used <= dev.spram]
        best = min(options, key=lambda o: (o.blocks_used, o.spram_used))
    if dev.ram_records:
        rec = blocks_for(device, params.max_pops, record_bits(params))
        if rec and best.blocks_used + rec <= dev.blocks:     # (4 or fewer: flip-flops anyway)
            best = replace(best, blocks={**best.blocks, "records": rec}, ram_records=True)
    if best.blocks_used > dev.blocks:
        where = f" on {board}" if board else ""
        big = sorted(best.blocks.items(), key=lambda kv: -kv[1])[:3]
        spram = (f", even with {', '.join(sorted(best.spram))} on {best.spram_used} of "
                 f"{dev.spram} SPRAM blocks" if best.spram else "")
        raise SnncError(
            f"the core's memories need {best.blocks_used} {dev.block} blocks{spram}; the "
            f"{device}{where} has {dev.blocks} (largest: "
            f"{', '.join(f'{k} {v}' for k, v in big)}): prune the network, use fewer bits"
            f"{f', compile with fewer lanes (it has {params.lanes})' if params.lanes > 1 else ''}"
            f", or build for a larger board (ulx3s-85f, orangecrab-85f)")
    return best
