"""Read a bundle's memory images (``mem/*.hex``, ``mem/params.json``) back into the
configuration writes that load them into a core.

This is the inverse of :func:`snnc.hw.mapping.write_hardware`'s image files: what ``snnc verify``
loads into the RTL, so that the images shipped in a bundle are what gets checked (for a bundle
written by snnc, the writes equal :func:`snnc.hw.mapping.config_writes` of its graph).
"""

from __future__ import annotations

import json
from pathlib import Path

from .mapping import _twos, recip
from .params import CfgSel, ConvField, CoreParams, ParamField

__all__ = ["ImageError", "read_hex", "config_writes_from_images"]


class ImageError(ValueError):
    """A memory image file is malformed or does not fit the core."""


def read_hex(path: Path, bits: int) -> list[int]:
    """One unsigned word of ``bits`` bits per line, as written by the mapper."""
    digits = max(1, (bits + 3) // 4)
    words = []
    for i, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.strip()
        if len(line) != digits or any(c not in "0123456789abcdefABCDEF" for c in line):
            raise ImageError(f"{path}, line {i}: expected {digits} hex digits, got {line[:20]!r}")
        value = int(line, 16)
        if value >> bits:
            raise ImageError(f"{path}, line {i}: {line} does not fit {bits} bits")
        words.append(value)
    return words


def config_writes_from_images(root, core: dict, params: CoreParams,
                              timesteps: int) -> list[tuple[int, int, int]]:
    """The ``(cfg_sel, cfg_addr, cfg_data)`` writes that load the images of the bundle at
    ``root`` (``core`` is its manifest's core section) into a core built for ``params``."""
    root = Path(root)
    mems = core["memories"]
    try:
        cfg = json.loads((root / mems["params"]).read_text())
        pops, convs = cfg["populations"], cfg["convolutions"]
        n_pops, clear = int(cfg["n_pops"]), int(cfg["clear_length"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ImageError(f"{root / mems['params']} is malformed: {exc}") from None
    memories = [(CfgSel.PTR, "ptr", params.ptr_bits, params.max_sources),
                (CfgSel.TGT, "tgt", params.tgt_bits, params.max_synapses),
                (CfgSel.WGT, "wgt", 8, params.weight_depth),
                (CfgSel.BIAS, "bias", params.v_bits, params.max_neurons)]
    writes = []
    for sel, key, bits, depth in memories:
        words = read_hex(root / mems[key], bits)
        if len(words) > depth:
            raise ImageError(f"{root / mems[key]} holds {len(words)} words; the core's memory "
                             f"holds {depth}")
        writes += [(sel, a, w) for a, w in enumerate(words)]
    if len(pops) != n_pops or n_pops > params.max_pops:
        raise ImageError(f"{root / mems['params']}: {len(pops)} populations for n_pops {n_pops} "
                         f"(the core holds {params.max_pops})")
    vb = params.v_bits
    try:
        for k, pop in enumerate(pops):
            for f in ParamField:
                value = int(pop[f.name])
                writes.append((CfgSel.PARAM, k * 16 + f,
                               _twos(value, vb) if f in (ParamField.VMIN, ParamField.VMAX)
                               else value))
        for j, cv in enumerate(convs):
            regs = dict(cv, RECIP_Y=recip(int(cv["STRIDE_Y"]), params),
                        RECIP_X=recip(int(cv["STRIDE_X"]), params))
            writes += [(CfgSel.CONV, j * 16 + f, int(regs[f.name])) for f in ConvField]
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise ImageError(f"{root / mems['params']} is malformed: {exc!r}") from None
    writes += [(CfgSel.GLOBAL, 0, n_pops), (CfgSel.GLOBAL, 1, int(timesteps)),
               (CfgSel.GLOBAL, 2, clear)]
    return [(int(s), int(a), int(d)) for s, a, d in writes]
