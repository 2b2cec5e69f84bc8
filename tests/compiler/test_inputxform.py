"""A constant scale and shift of the model's input folds into the input quantization."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snnc.compiler.data import quantize_inputs
from snnc.compiler.errors import SnncError
from snnc.compiler.extract import extract_layers
from snnc.compiler.pipeline import compile_model, compile_module
from snnc.sim.reference import run

from .conftest import exported

MEAN = (0.5, 0.25)          # powers of two: (x - mean) / std is exactly (x - offset) * gain
STD = (0.5, 0.25)


class Normalized(nn.Module):
    """A CNN whose forward starts with ``pre`` (applied to x), or with nothing."""

    def __init__(self, pre=None):
        super().__init__()
        self.pre = pre
        self.register_buffer("mean", torch.tensor(MEAN).view(2, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(2, 1, 1))
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        if self.pre == "meanstd":
            x = (x - self.mean) / self.std
        elif self.pre == "div16":
            x = x / 16
        return self.fc(torch.flatten(F.max_pool2d(torch.relu(self.conv(x)), 2), 1))


def save(model, path, shape):
    torch.export.save(torch.export.export(model.eval(), (torch.rand(2, *shape),)), path)
    return path


@pytest.mark.parametrize("fmt", ["module", "pt2"])
@pytest.mark.parametrize("pre", ["div16", "meanstd"])
def test_folded_transform_equals_preprocessed_data(tmp_path, fmt, pre):
    seed = 0
    print(f"seed {seed}")
    torch.manual_seed(seed)
    folded = Normalized(pre).eval()
    plain = Normalized().eval()
    plain.load_state_dict(folded.state_dict())
    rng = np.random.default_rng(seed)
    x = rng.random((48, 2, 8, 8)) * (16 if pre == "div16" else 1)
    x_pre = (x / 16 if pre == "div16"
             else (x - np.array(MEAN)[:, None, None]) / np.array(STD)[:, None, None])
    opts = {"bits": 4, "timesteps": 4, "max_strength": 7}
    if fmt == "pt2":
        g_fold, m_fold = compile_model(save(folded, tmp_path / "net.pt2", (2, 8, 8)),
                                       calib=(x, None), **opts)
    else:                                   # the nn.Module in memory (traced with torch.fx)
        [(g_fold, m_fold)] = compile_module(folded, [opts], calib=(x, None),
                                            input_shape=(2, 8, 8))
    g_plain, m_plain = compile_model(save(plain, tmp_path / "plain.pt2", (2, 8, 8)),
                                     calib=(x_pre, None), **opts)
    assert m_plain["input_transform"] is None
    t = m_fold["input_transform"]
    if pre == "div16":
        assert t == {"offset": [[[0.0]]], "gain": [[[1 / 16]]]}
    else:
        assert t == {"offset": [[[0.5]], [[0.25]]], "gain": [[[2.0]], [[4.0]]]}
    assert m_fold["input_scale"] == m_plain["input_scale"]
    assert g_fold.projections == g_plain.projections
    x_int = quantize_inputs(x, m_fold)
    assert np.array_equal(x_int, quantize_inputs(x_pre, m_plain))
    assert np.array_equal(run(g_fold, x_int).prediction,
                          run(g_plain, quantize_inputs(x_pre, m_plain)).prediction)
    # flattened samples quantize the same way
    assert np.array_equal(quantize_inputs(x.reshape(48, -1), m_fold), x_int.reshape(48, -1))


class Chain(nn.Module):
    def __init__(self, fn, d=4):
        super().__init__()
        self.fn = fn
        self.fc = nn.Linear(d, 3)

    def forward(self, x):
        return self.fc(self.fn(x))


@pytest.mark.parametrize("via", ["fx", "export"])
@pytest.mark.parametrize("fn, offset, gain", [
    (lambda x: x * 0.5, 0.0, 0.5),
    (lambda x: 0.5 * x, 0.0, 0.5),
    (lambda x: x - 0.5, 0.5, 1.0),
    (lambda x: 0.5 - x, 0.5, -1.0),
    (lambda x: torch.div(x.sub(0.5), 4), 0.5, 0.25),
    (lambda x: (x + 1) * 2 - 3, 0.5, 2.0),
    (lambda x: torch.flatten(x, 1) / 8, 0.0, 0.125),
])
def test_spellings_compose(via, fn, offset, gain):
    torch.manual_seed(0)
    model = Chain(fn).eval()
    src = model if via == "fx" else exported(model, torch.rand(2, 4))
    net = extract_layers(src, (4,))
    t = net.input_transform
    assert t.offset.tolist() == [offset] and t.gain.tolist() == [gain]
    x = np.random.default_rng(0).random((5, 4))
    np.testing.assert_allclose(net.forward(x), model(torch.from_numpy(x).float()).detach().numpy(),
                               rtol=1e-5, atol=1e-6)


class ReadTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(4, 3)

    def forward(self, x):
        return self.a(x / 16) + self.b(x)


@pytest.mark.parametrize("via", ["fx", "export"])
@pytest.mark.parametrize("model, match", [
    (Chain(lambda x: x * x), r"combines two values computed from the input \(like x \* x\)"),
    # exported, 16 / x is aten.reciprocal(x) * 16
    (Chain(lambda x: 16 / x), r"scales or shifts the model's input in a way snnc cannot fold|"
                              r"^aten.reciprocal.default .* is not supported"),
    (Chain(lambda x: x * torch.ones(2, 4)), r"scales or shifts the model's input in a way"),
    (ReadTwice(), r"scales or shifts the model's input in a way snnc cannot fold"),
    (Chain(lambda x: x * 0), r"the model's input transform \(.*mul.*\) multiplies the input by 0 "
                             r"or by a non-finite number"),
])
def test_transforms_that_do_not_fold_are_refused(via, model, match):
    src = model.eval() if via == "fx" else exported(model.eval(), torch.rand(2, 4))
    with pytest.raises(SnncError, match=match):
        extract_layers(src, (4,))


def test_old_bundles_without_a_transform_still_quantize():
    meta = {"input_scale": 0.5, "input_signed": False, "input_shape": [2]}
    assert quantize_inputs(np.array([[1.0, 2.0]]), meta).tolist() == [[2, 4]]
