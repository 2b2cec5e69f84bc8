"""The built-in digits data split and MLP."""

import numpy as np
import torch

from snnc.compiler.load import load_model
from snnc.models.digits import digits_split, export_model, train_digits_mlp


def test_split_is_fixed_and_scaled():
    x_tr, y_tr, x_te, y_te = digits_split()
    assert (x_tr.shape, x_te.shape) == ((1257, 64), (540, 64))
    assert x_tr.dtype == np.float32 and x_tr.min() == 0.0 and x_tr.max() == 1.0
    assert np.bincount(y_te).tolist() == [54, 55, 53, 55, 54, 55, 54, 54, 52, 54]   # stratified
    again = digits_split()
    assert np.array_equal(again[0], x_tr) and np.array_equal(again[3], y_te)


def test_training_is_deterministic():
    a, b = train_digits_mlp(0, epochs=2), train_digits_mlp(0, epochs=2)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_export_has_a_dynamic_batch(tmp_path):
    model = train_digits_mlp(0, epochs=1)
    path = export_model(model, tmp_path / "m.pt2")
    loaded = load_model(path)
    assert loaded.format == "exported"
    x = torch.rand(5, 64)
    assert torch.equal(loaded.module(x), model(x))
