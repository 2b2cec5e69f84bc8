"""Read a bundle's memory images (``mem/*.hex``, ``mem/params.json``) back into the
configuration writes that load them into a core.

This is the inverse of :func:`snnc.hw.mapping.write_hardware`'s image files: what ``snnc verify``
loads into the RTL, so that the images shipped in a bundle are what gets checked (for a bundle
written by snnc, the writes equal :func:`snnc.hw.mapping.config_writes` of its graph).

:func:`initial_contents` turns such writes into what a core holds once they are done: the
initial values of a core with its network built in (``Core(params, network=writes)``, the
memories initialized by the bitstream).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..compiler.errors import SnncError
from .mapping import _param_word, recip
from .params import CfgSel, ConvField, CoreParams, ParamField

__all__ = ["ImageError", "read_hex", "config_writes_from_images", "InitialContents",
           "initial_contents", "LOADED_MEMORIES"]

#: The memories a network is loaded into (the others, ``v``, ``spk`` and ``cnt``, hold run state).
LOADED_MEMORIES = ("ptr", "tgt", "wgt", "bias")


def _memory_specs(params: CoreParams) -> list[tuple[CfgSel, str, int, int, bool]]:
    """``(cfg_sel, name, bits, depth, signed)`` of each memory of :data:`LOADED_MEMORIES`, as
    :class:`snnc.hw.core.Core` builds it."""
    return [(CfgSel.PTR, "ptr", params.ptr_bits, params.max_sources, False),
            (CfgSel.TGT, "tgt", params.tgt_bits, params.max_synapses, False),
            (CfgSel.WGT, "wgt", 8, params.weight_depth, False),
            (CfgSel.BIAS, "bias", params.v_bits, params.max_neurons, True)]


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
    writes = []
    for sel, key, bits, depth, _ in _memory_specs(params):
        words = read_hex(root / mems[key], bits)
        if len(words) > depth:
            raise ImageError(f"{root / mems[key]} holds {len(words)} words; the core's memory "
                             f"holds {depth}")
        writes += [(sel, a, w) for a, w in enumerate(words)]
    if len(pops) != n_pops or n_pops > params.max_pops:
        raise ImageError(f"{root / mems['params']}: {len(pops)} populations for n_pops {n_pops} "
                         f"(the core holds {params.max_pops})")
    try:
        for k, pop in enumerate(pops):
            for f in ParamField:
                writes.append((CfgSel.PARAM, k * 16 + f, _param_word(f, int(pop[f.name]), params)))
        for j, cv in enumerate(convs):
            regs = dict(cv, RECIP_Y=recip(int(cv["STRIDE_Y"]), params),
                        RECIP_X=recip(int(cv["STRIDE_X"]), params))
            writes += [(CfgSel.CONV, j * 16 + f, int(regs[f.name])) for f in ConvField]
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise ImageError(f"{root / mems['params']} is malformed: {exc!r}") from None
    writes += [(CfgSel.GLOBAL, 0, n_pops), (CfgSel.GLOBAL, 1, int(timesteps)),
               (CfgSel.GLOBAL, 2, clear)]
    return [(int(s), int(a), int(d)) for s, a, d in writes]


@dataclass(frozen=True)
class InitialContents:
    """What a core holds after a list of configuration writes: the initial values of a core
    with that network built in.

    ``memories`` maps each name of :data:`LOADED_MEMORIES` to one value per word over the
    memory's whole depth (the bias signed); ``pops`` holds ``max_pops`` records and ``convs``
    ``max_convs`` records, each a dict from :class:`ParamField` / :class:`ConvField` name to
    value (VMIN and VMAX signed); ``global_regs`` maps ``n_pops``, ``timesteps`` and
    ``n_clear`` (``GLOBAL`` addresses 0, 1, 2) to their values.
    """
    memories: dict
    pops: tuple
    convs: tuple
    global_regs: dict


def _cut(value: int, bits: int, signed: bool) -> int:
    """``value`` cut to ``bits`` bits, as a register or memory word of that width holds it."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if signed and value >> (bits - 1) else value


def _field(layout, name: str, data: int) -> int:
    from amaranth.hdl import Shape
    shape = Shape.cast(layout[name].shape)
    return _cut(data, shape.width, shape.signed)


def initial_contents(writes, params: CoreParams) -> InitialContents:
    """What a core built for ``params`` holds once ``writes`` are done, starting from zeros.

    ``writes`` are ``(cfg_sel, cfg_addr, cfg_data)`` triples as
    :func:`snnc.hw.mapping.config_writes` and :func:`config_writes_from_images` make them. They
    are applied in order (a later write to the same place wins) to a core whose memory words
    and registers are all zero, and each value is cut to its word or field exactly as the
    core's configuration port does: ``cfg_data`` truncated to the width, read back as signed
    where the word is signed (the bias, VMIN, VMAX). This is what ``Core(params,
    network=writes)`` is built with, so that it starts (and returns after a reset) as a core
    loaded with ``writes``.

    A write the core would not carry out as meant is refused with an :class:`SnncError`: an
    address past a memory's depth, a population or convolution record the core does not have,
    an unknown field or global register, a membrane write (VMEM: every ``start`` clears the
    membranes, they are no part of a network), or an address or data wider than the port.
    """
    from .core import _conv_layout, _global_widths, _param_layout

    specs = {int(sel): (name, bits, depth, signed)
             for sel, name, bits, depth, signed in _memory_specs(params)}
    mems = {name: [0] * depth for name, _, depth, _ in specs.values()}
    playout, clayout = _param_layout(params), _conv_layout(params)
    pops = [{f.name: 0 for f in ParamField} for _ in range(params.max_pops)]
    convs = [{f.name: 0 for f in ConvField} for _ in range(params.max_convs)]
    widths = _global_widths(params)
    regs = dict.fromkeys(widths, 0)
    max_addr, max_data = 1 << params.cfg_addr_bits, 1 << params.cfg_data_bits
    for i, write in enumerate(writes):
        try:
            sel, addr, data = (int(v) for v in write)
        except (TypeError, ValueError):
            raise SnncError(f"configuration write {i} is {write!r}, not (cfg_sel, cfg_addr, "
                            "cfg_data)") from None

        def refuse(why):
            return SnncError(f"configuration write {i} {(sel, addr, data)} cannot be built into "
                             f"the core: {why}")

        if not (0 <= addr < max_addr and 0 <= data < max_data):
            raise refuse(f"the configuration port takes {params.cfg_addr_bits}-bit addresses "
                         f"and {params.cfg_data_bits}-bit data")
        if sel in specs:
            name, bits, depth, signed = specs[sel]
            if addr >= depth:
                raise refuse(f"the {name} memory holds {depth} words")
            mems[name][addr] = _cut(data, bits, signed)
        elif sel in (CfgSel.PARAM, CfgSel.CONV):
            records, fields, layout, what = ((pops, ParamField, playout, "population")
                                             if sel == CfgSel.PARAM else
                                             (convs, ConvField, clayout, "convolution"))
            k, f = divmod(addr, 16)
            if k >= len(records):
                raise refuse(f"the core has {len(records)} {what} records")
            if f not in set(fields):
                raise refuse(f"{what} field {f} does not exist")
            records[k][fields(f).name] = _field(layout, fields(f).name, data)
        elif sel == CfgSel.GLOBAL:
            if addr >= len(widths):
                raise refuse(f"global registers are 0..{len(widths) - 1}")
            name = list(widths)[addr]
            regs[name] = _cut(data, widths[name], False)
        elif sel == CfgSel.VMEM:
            raise refuse("membranes are cleared by every start and are no part of a network")
        else:
            raise refuse(f"cfg_sel {sel} addresses nothing")
    return InitialContents(memories=mems, pops=tuple(pops), convs=tuple(convs),
                           global_regs=regs)
