"""The compiled bundle: a directory holding everything ``snnc compile`` produces.

Layout (format version 2)::

    OUT/manifest.json   format version, network description, quantization metadata, core config,
                        the size and SHA-256 of every other file, and a hash of itself
    OUT/arrays.npz      the integer arrays of the network (weights, biases)
    OUT/core.v          Verilog of a core sized for the network
    OUT/mem/*.hex       memory images the core loads (one hex word per line)
    OUT/mem/params.json per-population parameter registers the core loads

Writing is atomic: :func:`write_bundle` writes into a hidden temporary directory beside ``OUT``
and renames it into place (exchanging it with an older bundle at ``OUT``, with Ctrl-C held back
for the two renames), so ``OUT`` is always either the old bundle, untouched, or the new one,
complete. It refuses a target that is a file or a non-empty directory that is not a bundle, and a
bundle holding files it did not write.

:func:`load_bundle` checks the manifest's own hash and every file's size and hash, so a bundle
changed after it was written (a file edited, truncated, replaced or missing) is refused, naming
the file. It never executes code from the bundle (``np.load`` with ``allow_pickle=False``).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from ..hw.convlists import DEFAULT_CONV_LISTS, check_layout
from ..ir import Graph, VerifyError, verify
from ..ir.serialize import graph_from_dict, graph_to_dict

__all__ = ["FORMAT_VERSION", "Bundle", "BundleError", "write_bundle", "load_bundle",
           "check_bundle_target", "check_output_file", "file_digest"]

FORMAT_VERSION = 2
MANIFEST = "manifest.json"


class BundleError(Exception):
    """A bundle directory is missing, corrupt, or from an unsupported format version; or a
    bundle cannot be written where it was asked to go."""


@dataclass
class Bundle:
    """A loaded bundle: the verified graph, the metadata, and where it lives (``manifest_sha256``
    identifies its content: ``snnc build`` records it for the network it puts in a bitstream)."""
    path: Path
    graph: Graph
    meta: dict = field(default_factory=dict)
    core: dict = field(default_factory=dict)
    manifest_sha256: str = ""

    @property
    def conv_lists(self) -> str:
        """How the bundle's images list convolution taps (:mod:`snnc.hw.convlists`); bundles
        written before the layout was recorded list them per channel."""
        return self.core.get("conv_lists", "channel")

    @property
    def lanes(self) -> int:
        """Synapse lanes of the bundle's core (1 for bundles without a core or written before
        lanes existed)."""
        return int(self.core.get("params", {}).get("lanes", 1))

    @property
    def tiled(self) -> bool:
        """The bundle's hardware is a tile array (``snnc compile --target/--tiles``)."""
        return bool(self.core.get("tiled"))

    def array_params(self):
        """The tile array's :class:`~snnc.hw.params.ArrayParams` (the target's tiles), and those
        ``array.v`` was generated with (the same, or tiles fitted to the network)."""
        from .tilemap import array_params_from
        try:
            return (array_params_from(self.core["array"]),
                    array_params_from(self.core["verilog_array"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{self.path}/manifest.json has an invalid tile array "
                              f"description: {exc}") from None

    def array_image(self):
        """The network laid out on the bundle's tiles, as its images are
        (:func:`snnc.compiler.tilemap.map_tiles` of the recorded target's partition)."""
        from .tiles import TileTarget, partition
        from .tilemap import map_tiles
        t = self.core["target"]
        target = TileTarget(t["name"], t["cols"], t["rows"], t["size"], t.get("about", ""))
        return map_tiles(self.graph, partition(self.graph, target, self.conv_lists),
                         self.conv_lists)

    def image(self):
        """The bundle's network laid out as its memory images are
        (:func:`snnc.hw.mapping.map_graph` with the bundle's ``conv_lists``, lanes and bank
        skew)."""
        from ..hw.mapping import map_graph
        return map_graph(self.graph, self.conv_lists, self.lanes,
                         int(self.core.get("params", {}).get("bank_skew", 0)))


# ---------------------------------------------------------------------------------------------
# hashes


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, as hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _manifest_digest(manifest: dict) -> str:
    """SHA-256 of the manifest's content (every key but ``manifest_sha256``), canonical JSON."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _listing(root: Path) -> list[str]:
    """Every file under ``root`` (relative POSIX paths), sorted."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
# where a bundle may be written


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable_dir(directory: Path, what: Path) -> None:
    """``directory`` (or its nearest existing ancestor) must be a writable directory."""
    base = _nearest_existing(directory)
    if not base.is_dir():
        raise BundleError(f"cannot write {what}: {base} is a file, not a directory")
    try:                      # a real probe: access() says yes to root on read-only places
        os.rmdir(tempfile.mkdtemp(prefix=".snnc-probe-", dir=base))
    except OSError as exc:
        raise BundleError(f"cannot write {what}: the directory {base} is not writable "
                          f"({exc.strerror}); choose another location") from None


def _manifest_files(root: Path) -> set[str] | None:
    """The files a bundle's manifest lists (with the manifest), or None if ``root`` holds no
    readable snnc bundle manifest."""
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != "snnc-bundle":
        return None
    files = manifest.get("files")
    if isinstance(files, dict):
        return {str(k) for k in files} | {MANIFEST}
    # format version 1 listed no files: what it wrote
    return {MANIFEST, "arrays.npz", "core.v", "mem/ptr.hex", "mem/tgt.hex", "mem/wgt.hex",
            "mem/bias.hex", "mem/params.json"}


def check_bundle_target(out) -> Path:
    """Check that a bundle can be written to ``out`` before any work is done; return the path.

    Refused: an empty path or ``.``; a path that is a file; a non-empty directory that is not an
    snnc bundle; a bundle directory holding files snnc did not write (they would be lost); a
    location that is not writable.
    """
    text = str(out)
    if not text.strip():
        raise BundleError("the output directory is empty: give the bundle a directory of its own, "
                          "e.g. -o build/net")
    out = Path(out)
    if out.absolute() == Path.cwd().absolute() or out.name in ("", ".", ".."):
        raise BundleError(f"cannot write a bundle to {text!r}: give it a directory of its own "
                          "(a new name, e.g. -o build/net), not the current or parent directory")
    if out.exists() and not out.is_dir():
        raise BundleError(f"{out} exists and is not a directory: a bundle is a directory; "
                          "choose another -o")
    if out.is_dir():
        present = _listing(out)
        if present:
            known = _manifest_files(out)
            if known is None:
                shown = ", ".join(present[:5]) + (f" (and {len(present) - 5} more)"
                                                  if len(present) > 5 else "")
                raise BundleError(f"{out} is not empty and is not an snnc bundle (it holds "
                                  f"{shown}); snnc writes a bundle into a directory of its own "
                                  "and replaces it whole: choose a new or empty directory")
            foreign = [p for p in present if p not in known]
            if foreign:
                shown = ", ".join(foreign[:5]) + (f" (and {len(foreign) - 5} more)"
                                                  if len(foreign) > 5 else "")
                raise BundleError(f"{out} is an snnc bundle but also holds files snnc did not "
                                  f"write ({shown}); recompiling replaces the whole directory, "
                                  "so move them elsewhere or choose another -o")
        _check_writable_dir(out.parent, out)
    else:
        _check_writable_dir(out.parent, out)
    return out


def check_output_file(path, what: str = "--json") -> Path:
    """Check, before any work, that a result file (``--json FILE``) can be written."""
    text = str(path)
    if not text.strip():
        raise BundleError(f"{what} needs a file name")
    path = Path(path)
    if path.is_dir():
        raise BundleError(f"{what} {path} is a directory; give a file name, e.g. "
                          f"{path / 'results.json'}")
    _check_writable_dir(path.parent, path)
    return path


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# atomic install


@contextmanager
def _signals_held():
    """Hold back SIGINT/SIGTERM (delivered right after the block) so that what runs inside
    completes; a no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []
    sigs = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.getsignal(s) for s in sigs}
    for s in sigs:
        signal.signal(s, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for s in sigs:
            signal.signal(s, old[s])
        for s in pending[:1]:
            if s == signal.SIGINT:
                raise KeyboardInterrupt
            os.kill(os.getpid(), s)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _install(tmp: Path, out: Path) -> None:
    """Move the finished bundle ``tmp`` to ``out``, replacing a bundle there atomically."""
    with _signals_held():
        if not out.exists():
            os.rename(tmp, out)
            return
        if not _exchange(tmp, out):
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / "b")
            try:
                os.rename(tmp, out)
            except OSError:
                os.rename(old / "b", out)       # put the old bundle back
                os.rmdir(old)
                raise
            tmp = old
        shutil.rmtree(tmp, ignore_errors=True)      # now the old bundle


def write_bundle(out_dir, graph: Graph, meta: dict | None = None, *, hardware: bool = True,
                 conv_lists: str = DEFAULT_CONV_LISTS, input_once: bool = True,
                 lanes: int = 1, bank_skew: int | None = None, target=None) -> Bundle:
    """Write ``graph`` (verified first) and ``meta`` to the bundle directory ``out_dir``.

    With ``hardware=True`` the bundle also gets the generated core (``core.v``) and its memory
    images; the core is sized for this network (see :func:`snnc.hw.mapping.core_params_for`),
    with convolution taps listed by ``conv_lists`` (:mod:`snnc.hw.convlists`) and, with
    ``input_once``, an input-current memory so that the input is walked once per inference
    (:class:`snnc.hw.params.CoreParams`, ``input_current_depth``), with ``lanes`` synapse lanes
    and their membrane banks by ``bank_skew`` (None: :func:`snnc.compiler.banks.choose_bank_skew`).
    The target is checked first (:func:`check_bundle_target`); the bundle is written beside it
    and renamed into place, so ``out_dir`` is never left half-written. With ``target`` (a
    :class:`~snnc.compiler.tiles.TileTarget`) the hardware is a tile array instead
    (:func:`snnc.compiler.tilemap.write_array_hardware`: ``array.v``, per-tile images, routing
    tables; one lane, the input walked every timestep). Before anything is
    written, a network too large for a generated core, for this machine's memory or for the free
    disk space is refused with :class:`~snnc.compiler.errors.SnncError`
    (:mod:`snnc.compiler.budget`).
    """
    verify(graph)
    check_layout(conv_lists)
    out = check_bundle_target(out_dir)
    if target is not None:
        from .tiles import partition
        partition(graph, target, conv_lists)           # a TilingError before anything is written
    elif hardware:
        from .budget import check_footprint, core_limits, graph_footprint, machine
        check_footprint(graph_footprint(graph, conv_lists, input_once=input_once, lanes=lanes),
                        limits=core_limits(), **machine(out))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:
        raise BundleError(f"cannot write the bundle {out}: {exc.strerror} ({exc.filename})") from None
    try:
        desc, arrays = graph_to_dict(graph)
        core: dict = {}
        if hardware and target is not None:
            from .tilemap import write_array_hardware
            core = write_array_hardware(tmp, graph, target, conv_lists)
        elif hardware:
            from ..hw.mapping import write_hardware
            if bank_skew is None:
                from .banks import choose_bank_skew
                bank_skew = choose_bank_skew(graph, conv_lists, lanes)
            core = write_hardware(tmp, graph, conv_lists, input_once=input_once, lanes=lanes,
                                  bank_skew=bank_skew)
        np.savez_compressed(tmp / "arrays.npz", **arrays)
        files = {name: {"bytes": (tmp / name).stat().st_size, "sha256": file_digest(tmp / name)}
                 for name in _listing(tmp)}
        manifest = {"format": "snnc-bundle", "format_version": FORMAT_VERSION,
                    "network": desc, "meta": dict(meta or {}), "core": core, "files": files}
        manifest["manifest_sha256"] = _manifest_digest(manifest)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
        _install(tmp, out)
    except OSError as exc:
        raise BundleError(f"writing the bundle {out} failed: {exc.strerror} ({exc.filename}); "
                          "nothing was changed at the target") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Bundle(path=out, graph=graph, meta=manifest["meta"], core=core,
                  manifest_sha256=manifest["manifest_sha256"])


# ---------------------------------------------------------------------------------------------
# loading


def _recompile(root: Path) -> str:
    return f"recompile it (snnc compile MODEL ... -o {root})"


def _check_files(root: Path, files) -> None:
    if not isinstance(files, dict):
        raise BundleError(f"{root / MANIFEST} lists no files: the bundle is damaged; "
                          f"{_recompile(root)}")
    for name, entry in files.items():
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise BundleError(f"{root / MANIFEST} names a file outside the bundle ({name!r}); "
                              f"{_recompile(root)}")
        path = root / rel
        if not path.is_file():
            raise BundleError(f"{root} is missing {name}: the bundle is incomplete; "
                              f"{_recompile(root)}")
        size = path.stat().st_size
        if size != entry.get("bytes"):
            why = f"it has {size} bytes, the manifest says {entry.get('bytes')}"
        elif file_digest(path) != entry.get("sha256"):
            why = "its content differs from what snnc wrote"
        else:
            continue
        raise BundleError(f"{path} does not match the bundle's manifest ({why}: it was changed, "
                          f"truncated or replaced after snnc compile wrote the bundle); "
                          f"{_recompile(root)}")


def load_bundle(path) -> Bundle:
    """Load and verify a bundle directory; raise :class:`BundleError` with a clear message.

    Every file the manifest lists is checked (size and SHA-256) and so is the manifest itself;
    an inconsistent bundle is refused, naming the file.
    """
    root = Path(path)
    mpath = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"{root} is not a bundle directory (run `snnc compile MODEL -o {root}`)")
    if not mpath.is_file():
        raise BundleError(f"{root} has no {MANIFEST}: it is not an snnc bundle (or an incomplete "
                          f"one); {_recompile(root)}")
    try:
        manifest = json.loads(mpath.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BundleError(f"{mpath} is corrupt ({type(exc).__name__}: {exc}); "
                          f"{_recompile(root)}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "snnc-bundle":
        raise BundleError(f"{mpath} is not an snnc bundle manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{root} has bundle format version {version!r}; this snnc reads "
                          f"version {FORMAT_VERSION}: recompile the model with this snnc")
    if manifest.get("manifest_sha256") != _manifest_digest(manifest):
        raise BundleError(f"{mpath} was changed after snnc wrote it (its content does not match "
                          f"its hash); {_recompile(root)}")
    _check_files(root, manifest.get("files"))
    try:
        with np.load(root / "arrays.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise BundleError(f"{root} has no arrays.npz: the bundle is incomplete") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise BundleError(f"{root / 'arrays.npz'} is corrupt: {exc}") from None
    try:
        graph = graph_from_dict(manifest["network"], arrays)
    except (KeyError, TypeError, ValueError, VerifyError) as exc:
        raise BundleError(f"{mpath} describes an invalid network: {exc}") from None
    core = manifest.get("core") or {}
    for name in [core.get("verilog")] + list((core.get("memories") or {}).values()):
        if name is not None and name not in manifest["files"]:
            raise BundleError(f"{mpath} refers to {name}, which the bundle does not hold; "
                              f"{_recompile(root)}")
    return Bundle(path=root, graph=graph, meta=manifest.get("meta", {}), core=core,
                  manifest_sha256=manifest["manifest_sha256"])
