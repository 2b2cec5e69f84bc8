"""Data files and input quantization.

Data sets are ``.npz`` files (``numpy.savez``) with a float array ``x`` (batch first, each sample
in the model's input shape or flattened) and optionally integer labels ``y``. They are read with
``allow_pickle=False``, so a data file can never run code.

:func:`quantize_inputs` maps float inputs to the integer input events of the SNN, with the scale
the compiler chose at calibration (``meta["input_scale"]``, ``meta["input_signed"]``)::

    x' = (x - offset) * gain                            # if meta["input_transform"] is set
    x_int = clip(round(x' / input_scale), 0, 255)       # unsigned inputs
    x_int = clip(round(x' / input_scale), -127, 127)    # signed inputs

``round`` rounds halves away from zero. ``meta["input_transform"]`` is the model's own constant
scale and shift of its input (``x / 255``, ``(x - mean) / std`` at the start of ``forward``),
folded out of the network by :mod:`snnc.compiler.inputxform`: ``{"offset": ..., "gain": ...}``,
nested lists broadcastable to ``meta["input_shape"]``, or None (absent in older bundles).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .errors import SnncError
from .floatnet import apply_input_transform
from .quantize import round_half_away

__all__ = ["load_npz", "check_samples", "quantize_inputs"]


def load_npz(path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read ``x`` (as float64) and ``y`` (as int64, or None) from an ``.npz`` data file.

    Raises
    ------
    SnncError
        Missing or unreadable file, no ``x``, non-numeric or non-finite ``x``, or labels that are
        not one non-negative integer per sample.
    """
    path = Path(path)
    if not path.is_file():
        raise SnncError(f"data file {path} does not exist" if not path.exists()
                        else f"data path {path} is not a file")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise SnncError(f"cannot read {path} as an .npz data file: {exc}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise SnncError(f"{path} holds a single array, not an .npz archive; save the data with "
                        "numpy.savez(path, x=inputs, y=labels)")
    try:
        with npz:
            if "x" not in npz.files:
                have = ", ".join(npz.files) or "none"
                raise SnncError(f"{path} has no array 'x' (it has: {have}); save the data with "
                                "numpy.savez(path, x=inputs, y=labels)")
            x = npz["x"]
            y = npz["y"] if "y" in npz.files else None
    except SnncError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise SnncError(f"cannot read {path} as an .npz data file: {exc}") from None
    return _check_x(x, path), (None if y is None else _check_y(y, len(x), path))


def _check_x(x: np.ndarray, path) -> np.ndarray:
    if x.dtype.kind not in "fiu":
        raise SnncError(f"{path}: 'x' must hold numbers, not {x.dtype}")
    if x.ndim < 2 or x.shape[0] == 0:
        raise SnncError(f"{path}: 'x' must be batch-first with at least one sample, shape "
                        f"(N, features...), not {list(x.shape)}")
    x = x.astype(np.float64)
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise SnncError(f"{path}: 'x' holds {bad} non-finite value(s) (NaN or inf)")
    return x


def _check_y(y: np.ndarray, n: int, path) -> np.ndarray:
    if y.ndim != 1 or len(y) != n:
        raise SnncError(f"{path}: 'y' must hold one label per sample, shape ({n},), not "
                        f"{list(y.shape)}")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.floor(y)):
            raise SnncError(f"{path}: 'y' must hold integer class labels")
    elif y.dtype.kind not in "iu":
        raise SnncError(f"{path}: 'y' must hold integer class labels, not {y.dtype}")
    y = y.astype(np.int64)
    if (y < 0).any():
        raise SnncError(f"{path}: 'y' holds negative labels")
    return y


def check_samples(x, input_shape, what: str = "the data") -> np.ndarray:
    """Return ``x`` shaped (N, *input_shape), accepting flattened samples; SnncError otherwise."""
    x = np.asarray(x)
    input_shape = tuple(int(d) for d in input_shape)
    if tuple(x.shape[1:]) == input_shape:
        return x
    if int(np.prod(x.shape[1:])) == int(np.prod(input_shape)):
        return x.reshape((x.shape[0], *input_shape))
    raise SnncError(f"{what} has samples of shape {list(x.shape[1:])}, the model expects "
                    f"{list(input_shape)}")


def quantize_inputs(x_float, meta: dict) -> np.ndarray:
    """Float inputs to integer input events (int64, same shape), using a bundle's ``meta``."""
    try:
        scale, signed = float(meta["input_scale"]), bool(meta["input_signed"])
    except (KeyError, TypeError, ValueError):
        raise SnncError("the bundle's metadata has no input quantization (input_scale, "
                        "input_signed); recompile the model with snnc compile") from None
    if not scale > 0:
        raise SnncError(f"the bundle's input_scale must be > 0, not {scale}")
    lo, hi = (-127, 127) if signed else (0, 255)
    x = np.asarray(x_float, dtype=np.float64)
    transform = meta.get("input_transform")
    if transform:
        shape = tuple(int(d) for d in meta["input_shape"])
        if x.ndim < 1 or int(np.prod(x.shape[1:])) != int(np.prod(shape)):
            raise SnncError(f"inputs of shape {list(x.shape)} do not hold samples of the "
                            f"bundle's input shape {list(shape)}")
        x = apply_input_transform(x, transform["offset"], transform["gain"], shape)
    return np.clip(round_half_away(x / scale), lo, hi).astype(np.int64)
