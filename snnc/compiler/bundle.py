"""The compiled bundle: a directory holding everything ``snnc compile`` produces.

Layout (format version 1)::

    OUT/manifest.json   format version, network description, quantization metadata, core config
    OUT/arrays.npz      the integer arrays of the network (weights, biases)
    OUT/core.v          Verilog of a core sized for the network
    OUT/mem/*.hex       memory images the core loads (one hex word per line)
    OUT/mem/params.json per-population parameter registers the core loads

:func:`load_bundle` never executes code from the bundle (``np.load`` with ``allow_pickle=False``).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..ir import Graph, VerifyError, verify
from ..ir.serialize import graph_from_dict, graph_to_dict

__all__ = ["FORMAT_VERSION", "Bundle", "BundleError", "write_bundle", "load_bundle"]

FORMAT_VERSION = 1


class BundleError(Exception):
    """A bundle directory is missing, corrupt, or from an unsupported format version."""


@dataclass
class Bundle:
    """A loaded bundle: the verified graph, the metadata, and where it lives."""
    path: Path
    graph: Graph
    meta: dict = field(default_factory=dict)
    core: dict = field(default_factory=dict)


def write_bundle(out_dir, graph: Graph, meta: dict | None = None, *, hardware: bool = True) -> Bundle:
    """Write ``graph`` (verified first) and ``meta`` to the bundle directory ``out_dir``.

    With ``hardware=True`` the bundle also gets the generated core (``core.v``) and its memory
    images; the core is sized for this network (see :func:`snnc.hw.mapping.core_params_for`).
    Before anything is written, a network too large for a generated core, for this machine's
    memory or for the free disk space is refused with :class:`~snnc.compiler.errors.SnncError`
    (:mod:`snnc.compiler.budget`).
    """
    verify(graph)
    out = Path(out_dir)
    if hardware:
        from .budget import check_footprint, core_limits, graph_footprint, machine
        check_footprint(graph_footprint(graph), limits=core_limits(), **machine(out))
    out.mkdir(parents=True, exist_ok=True)
    desc, arrays = graph_to_dict(graph)
    core: dict = {}
    if hardware:
        from ..hw.mapping import write_hardware
        core = write_hardware(out, graph)
    np.savez_compressed(out / "arrays.npz", **arrays)
    manifest = {"format": "snnc-bundle", "format_version": FORMAT_VERSION,
                "network": desc, "meta": dict(meta or {}), "core": core}
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    tmp.replace(out / "manifest.json")
    return Bundle(path=out, graph=graph, meta=manifest["meta"], core=core)


def load_bundle(path) -> Bundle:
    """Load and verify a bundle directory; raise :class:`BundleError` with a clear message."""
    root = Path(path)
    mpath = root / "manifest.json"
    if not root.is_dir():
        raise BundleError(f"{root} is not a bundle directory (run `snnc compile MODEL -o {root}`)")
    if not mpath.is_file():
        raise BundleError(f"{root} has no manifest.json: it is not an snnc bundle")
    try:
        manifest = json.loads(mpath.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{mpath} is corrupt: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "snnc-bundle":
        raise BundleError(f"{mpath} is not an snnc bundle manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{root} has bundle format version {version!r}; this snnc reads "
                          f"version {FORMAT_VERSION}: recompile the model with this snnc")
    try:
        with np.load(root / "arrays.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise BundleError(f"{root} has no arrays.npz: the bundle is incomplete") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise BundleError(f"{root / 'arrays.npz'} is corrupt: {exc}") from None
    try:
        graph = graph_from_dict(manifest["network"], arrays)
    except (KeyError, VerifyError) as exc:
        raise BundleError(f"{mpath} describes an invalid network: {exc}") from None
    return Bundle(path=root, graph=graph, meta=manifest.get("meta", {}),
                  core=manifest.get("core", {}))
