"""Front-end pass: read a trained PyTorch model from disk.

Three formats are accepted, told apart by the file's content (not its name):

``exported``
    A ``.pt2`` ExportedProgram (``torch.export.save``). Safe to load: no code from the file runs.
``state_dict``
    ``torch.save(model.state_dict(), path)``, loaded with ``torch.load(weights_only=True)``; the
    network's class comes from ``--arch module:Class`` (instantiated without arguments).
``pickled``
    ``torch.save(model, path)``. Unpickling runs code named in the file, so it is refused unless
    the user passes ``--trust-model``.

Every failure (missing, corrupt, truncated or non-model file, unknown ``--arch``, mismatched
state_dict keys) raises :class:`SnncError` with a message saying what to do.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import pickle
import re
import sys
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import SnncError, describe_module

__all__ = ["LoadedModel", "load_model", "import_arch", "EXPORT_HINT"]

#: How to turn a model into a file snnc can load without running code from it.
EXPORT_HINT = ("export it instead: torch.export.save(torch.export.export(model, (example,)), "
               "'model.pt2'), or save model.state_dict() and pass --arch module:Class")


@dataclass
class LoadedModel:
    """A loaded model and where it came from.

    Attributes
    ----------
    module : torch.nn.Module
        The network; for the ``exported`` format the ExportedProgram's ``ep.module()``.
    format : str
        ``"exported"``, ``"state_dict"`` or ``"pickled"``.
    path : Path
    """
    module: nn.Module
    format: str
    path: Path


@contextmanager
def _cwd_on_path():
    """Make modules in the current directory importable (for --arch and trusted pickles)."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


@contextmanager
def _quiet_torch_export():
    """torch.export.load logs full tracebacks on failure; the user gets our message instead."""
    logger = logging.getLogger("torch.export")
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(old)


def _sniff(path: Path) -> str:
    """``"pt2"``, ``"torch_zip"`` or ``"other"`` from the file's content."""
    if not zipfile.is_zipfile(path):
        return "other"
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return "other"
    if any(n == "archive_format" or n.endswith("/archive_format") for n in names):
        return "pt2"
    if any(n.endswith("data.pkl") for n in names):
        return "torch_zip"
    return "zip"


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception's message (torch's messages run on for lines)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    cut = line.find(". ", 20)
    return line[:cut] if cut > 0 else line.rstrip(".")


def _load_exported(path: Path) -> nn.Module:
    try:
        with _quiet_torch_export():
            ep = torch.export.load(path)
    except Exception as exc:  # deserialization raises many error types
        raise SnncError(f"{path} looks like a torch.export archive (.pt2) but cannot be read: "
                        f"{_first_line(exc)}; the file may be corrupt or written by an "
                        f"incompatible torch version (this is torch {torch.__version__})") from None
    return ep.module()


def _unsafe_global(exc: BaseException) -> str | None:
    """The class a weights_only load refused, e.g. ``'__main__.Net'``, if that was the failure."""
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    return m.group(1) if m else None


def _unsafe_torch_load(path: Path):
    """``torch.load(weights_only=False)``: only after the user passed --trust-model."""
    try:
        with _cwd_on_path():
            return torch.load(path, map_location="cpu", weights_only=False)
    except (AttributeError, ImportError) as exc:
        raise SnncError(f"{path} refers to code that cannot be imported ({_first_line(exc)}); "
                        "run snnc where the model's module is importable, or "
                        + EXPORT_HINT) from None
    except Exception as exc:  # unpickling can fail in arbitrary ways
        raise SnncError(f"cannot read {path}: {_first_line(exc)}; the file is corrupt, "
                        "truncated, or not a PyTorch file") from None


def _torch_load(path: Path, *, trust_model: bool):
    """Load a torch.save file safely; unpickle arbitrary objects only with ``trust_model``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if trust_model:
            return _unsafe_torch_load(path)
        cls = _unsafe_global(exc)
        if cls is not None:
            raise SnncError(
                f"{path} is a pickled Python object (it names {cls}); loading it runs code from "
                "the file, so snnc refuses by default. If you trust the file, pass --trust-model; "
                "otherwise " + EXPORT_HINT) from None
        raise SnncError(f"cannot read {path} safely ({_first_line(exc)}): it is not a PyTorch "
                        "model file, or it needs code execution to load. If you trust it, pass "
                        "--trust-model; otherwise " + EXPORT_HINT) from None
    except Exception as exc:  # torch reports corrupt files with many exception types
        raise SnncError(f"cannot read {path}: {_first_line(exc)}; the file is corrupt, truncated, "
                        "or not a PyTorch model file") from None


def _is_state_dict(obj) -> bool:
    return (isinstance(obj, dict) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def import_arch(spec: str) -> type:
    """Import ``module:Class`` (or ``path/to/file.py:Class``), from the current directory too."""
    if spec.count(":") != 1 or not all(spec.split(":")):
        raise SnncError(f"--arch must look like module:Class (e.g. mynets:MLP), not {spec!r}")
    mod_name, cls_name = spec.split(":")
    try:
        with _cwd_on_path():
            if mod_name.endswith(".py"):
                file = Path(mod_name)
                if not file.is_file():
                    raise SnncError(f"--arch {spec}: file {file} does not exist")
                mspec = importlib.util.spec_from_file_location(file.stem, file)
                module = importlib.util.module_from_spec(mspec)
                mspec.loader.exec_module(module)
            else:
                module = importlib.import_module(mod_name)
    except SnncError:
        raise
    except ModuleNotFoundError as exc:
        raise SnncError(f"--arch {spec}: cannot import module {mod_name!r} ({exc}); it must be "
                        "importable from the current directory or the Python path") from None
    except Exception as exc:
        raise SnncError(f"--arch {spec}: importing {mod_name!r} failed: "
                        f"{type(exc).__name__}: {_first_line(exc)}") from None
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise SnncError(f"--arch {spec}: module {mod_name!r} has no attribute {cls_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise SnncError(f"--arch {spec}: {cls_name!r} is not a torch.nn.Module subclass")
    return cls


def _build_arch(spec: str, state: dict, path: Path) -> nn.Module:
    cls = import_arch(spec)
    try:
        model = cls()
    except Exception as exc:
        raise SnncError(f"--arch {spec}: {cls.__name__}() cannot be created without arguments "
                        f"({type(exc).__name__}: {_first_line(exc)}); give its constructor "
                        "defaults, or export a .pt2 instead") from None
    result_msg = _state_dict_mismatch(model, state)
    if result_msg:
        raise SnncError(f"{path} does not fit --arch {spec}: {result_msg}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise SnncError(f"{path} does not fit --arch {spec}: {_first_line(exc)}") from None
    return model


def _state_dict_mismatch(model: nn.Module, state: dict) -> str:
    """Describe missing/unexpected keys and shape mismatches; '' if the state fits."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} is {list(state[k].shape)} in the file, {list(own[k].shape)} in the model"
              for k in own if k in state and state[k].shape != own[k].shape]

    def show(keys):
        return ", ".join(keys[:5]) + (f" (and {len(keys) - 5} more)" if len(keys) > 5 else "")
    parts = []
    if missing:
        parts.append(f"missing keys {show(missing)}")
    if unexpected:
        parts.append(f"unexpected keys {show(unexpected)}")
    if shapes:
        parts.append("shape mismatch: " + show(shapes))
    return "; ".join(parts)


def load_model(path, *, arch: str | None = None, trust_model: bool = False) -> LoadedModel:
    """Load a model file in any of the three formats (see the module docstring).

    Parameters
    ----------
    path : str or Path
    arch : str, optional
        ``module:Class`` for a state_dict file (required for it, refused for the others).
    trust_model : bool
        Allow unpickling a fully pickled ``nn.Module`` (runs code named in the file).

    Returns
    -------
    LoadedModel

    Raises
    ------
    SnncError
    """
    path = Path(path)
    if not path.exists():
        raise SnncError(f"model file {path} does not exist")
    if not path.is_file():
        raise SnncError(f"{path} is not a file (give the model file: .pt2 or a torch.save file)")
    kind = _sniff(path)
    if kind == "zip":
        raise SnncError(f"{path} is a zip archive but not a PyTorch model (.pt2 or torch.save)")
    if kind == "pt2":
        if arch is not None:
            raise SnncError(f"--arch is only for state_dict files; {path} is an exported program "
                            "that already holds the network: drop --arch")
        return LoadedModel(_load_exported(path), "exported", path)
    if kind == "other" and path.suffix == ".pt2":
        raise SnncError(f"{path} is not a valid .pt2 archive: the file is corrupt or truncated")
    obj = _torch_load(path, trust_model=trust_model)
    if isinstance(obj, nn.Module):
        if arch is not None:
            raise SnncError(f"--arch is only for state_dict files; {path} holds a whole "
                            f"{describe_module(obj)}: drop --arch")
        return LoadedModel(obj.cpu().eval(), "pickled", path)
    if _is_state_dict(obj):
        if arch is None:
            raise SnncError(f"{path} is a state_dict: it holds weights but not the network's "
                            "structure; pass --arch module:Class naming the model class (its "
                            "module must be importable from the current directory)")
        return LoadedModel(_build_arch(arch, obj, path).eval(), "state_dict", path)
    if isinstance(obj, dict):
        keys = ", ".join(repr(k) for k in list(obj)[:6])
        raise SnncError(f"{path} holds a dict that is not a state_dict (keys: {keys}); save "
                        "model.state_dict() itself and pass --arch module:Class, or export a "
                        ".pt2 with torch.export")
    raise SnncError(f"{path} holds a {type(obj).__name__}, not a model; " + EXPORT_HINT)
