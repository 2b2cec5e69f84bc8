"""Data files (.npz) and input quantization."""

import numpy as np
import pytest

from snnc.compiler.data import check_samples, load_npz, quantize_inputs
from snnc.compiler.errors import SnncError


def test_load_npz_roundtrip(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.ones((3, 2, 2), dtype=np.float32), y=np.array([0, 2, 1]))
    x, y = load_npz(tmp_path / "d.npz")
    assert x.dtype == np.float64 and x.shape == (3, 2, 2)
    assert y.dtype == np.int64 and y.tolist() == [0, 2, 1]
    np.savez(tmp_path / "nolabels.npz", x=np.arange(6, dtype=np.uint8).reshape(2, 3))
    x, y = load_npz(tmp_path / "nolabels.npz")
    assert y is None and x.tolist() == [[0, 1, 2], [3, 4, 5]]
    np.savez(tmp_path / "floatlabels.npz", x=np.ones((2, 1)), y=np.array([1.0, 0.0]))
    assert load_npz(tmp_path / "floatlabels.npz")[1].tolist() == [1, 0]


@pytest.mark.parametrize("arrays, match", [
    ({"inputs": np.ones((2, 2))}, "has no array 'x' \\(it has: inputs\\)"),
    ({"x": np.array(["a", "b"]).reshape(2, 1)}, "'x' must hold numbers"),
    ({"x": np.array([[1.0, np.nan], [np.inf, 0.0]])}, "2 non-finite value"),
    ({"x": np.ones(4)}, "batch-first"),
    ({"x": np.ones((0, 4))}, "at least one sample"),
    ({"x": np.ones((3, 2)), "y": np.array([0, 1])}, "one label per sample, shape \\(3,\\)"),
    ({"x": np.ones((2, 2)), "y": np.array([0.5, 1.0])}, "integer class labels"),
    ({"x": np.ones((2, 2)), "y": np.array([-1, 1])}, "negative labels"),
])
def test_load_npz_errors(tmp_path, arrays, match):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(SnncError, match=match):
        load_npz(tmp_path / "d.npz")


def test_load_npz_bad_files(tmp_path):
    with pytest.raises(SnncError, match="does not exist"):
        load_npz(tmp_path / "missing.npz")
    np.save(tmp_path / "single.npy", np.ones((2, 2)))
    with pytest.raises(SnncError, match="single array, not an .npz"):
        load_npz(tmp_path / "single.npy")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(SnncError, match="cannot read"):
        load_npz(tmp_path / "junk.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([[{"a": 1}]], dtype=object))
    with pytest.raises(SnncError, match="cannot read"):     # allow_pickle=False refuses objects
        load_npz(tmp_path / "obj.npz")


def test_check_samples():
    assert check_samples(np.ones((2, 64)), (1, 8, 8)).shape == (2, 1, 8, 8)
    assert check_samples(np.ones((2, 8, 8)), (64,)).shape == (2, 64)
    with pytest.raises(SnncError, match=r"samples of shape \[63\], the model expects \[64\]"):
        check_samples(np.ones((2, 63)), (64,))


def test_quantize_inputs_unsigned_and_signed():
    meta = {"input_scale": 0.01, "input_signed": False}
    x = np.array([[0.0, 0.004, 0.005, 0.015, 2.55, 3.0, -1.0]])
    assert quantize_inputs(x, meta).tolist() == [[0, 0, 1, 2, 255, 255, 0]]
    meta = {"input_scale": 0.5, "input_signed": True}
    x = np.array([[-0.25, -0.75, 0.25, 63.5, 100.0, -100.0]])
    assert quantize_inputs(x, meta).tolist() == [[-1, -2, 1, 127, 127, -127]]
    assert quantize_inputs(x, meta).dtype == np.int64


def test_quantize_inputs_needs_meta():
    with pytest.raises(SnncError, match="no input quantization"):
        quantize_inputs(np.ones((1, 2)), {})
    with pytest.raises(SnncError, match="input_scale must be > 0"):
        quantize_inputs(np.ones((1, 2)), {"input_scale": 0.0, "input_signed": False})
