"""Cross-layer equalization (snnc.compiler.equalize): the float function is unchanged, each
equalized channel's two weight ranges become equal, and capped layers and the readout are left
alone."""

import numpy as np
import pytest
import torch
from torch import nn

from snnc.compiler.equalize import equalize
from snnc.compiler.extract import extract_layers
from snnc.compiler.floatnet import FloatNet


def test_two_layer_ranges_become_equal():
    w1 = np.array([[4.0, -1.0], [0.5, 0.25]])          # row ranges 4, 0.5
    w2 = np.array([[1.0, 8.0]])                         # column ranges 1, 8
    net = FloatNet.from_dense((2,), [("h", w1, np.array([1.0, 2.0])), ("out", w2, np.zeros(1))])
    eq = equalize(net, rounds=1)
    s = np.sqrt(np.array([4.0, 0.5]) / np.array([1.0, 8.0]))           # 2, 0.25
    assert np.allclose(eq.node("h").terms[0].weight, w1 / s[:, None])
    assert np.allclose(eq.node("h").bias, np.array([1.0, 2.0]) / s)
    assert np.allclose(eq.node("out").terms[0].weight, w2 * s[None, :])
    r1 = np.abs(eq.node("h").terms[0].weight).max(axis=1)
    r2 = np.abs(eq.node("out").terms[0].weight).max(axis=0)
    assert np.allclose(r1, r2)
    x = np.random.default_rng(0).random((20, 2))
    assert np.allclose(net.forward(x), eq.forward(x), rtol=1e-12, atol=1e-12)


class Net(nn.Module):
    def __init__(self, cap):
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.c2 = nn.Conv2d(6, 6, 3, padding=1)
        self.s = nn.Conv2d(6, 6, 1)
        self.c3 = nn.Conv2d(6, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 2 * 2, 12)
        self.fc2 = nn.Linear(12, 4)
        self.cap = cap

    def forward(self, x):
        a = torch.nn.functional.max_pool2d(torch.relu(self.bn1(self.c1(x))), 2)      # 4 x 4
        h = torch.relu(self.c2(a))
        b = torch.relu(self.s(h) + a)                                                 # residual
        act = torch.nn.functional.relu6 if self.cap else torch.relu
        c = torch.nn.functional.avg_pool2d(act(self.c3(b)), 2)                        # 2 x 2
        return self.fc2(torch.relu(self.fc1(torch.flatten(c, 1))))


@pytest.mark.parametrize("cap", [False, True])
def test_function_is_unchanged_through_pools_residuals_and_dense(seed, cap):
    torch.manual_seed(seed % (2 ** 31))
    print("seed", seed)
    model = Net(cap).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(torch.rand(m.weight.shape[0], *[1] * (m.weight.dim() - 1)) * 4)
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
    net = extract_layers(torch.export.export(model, (torch.zeros(2, 1, 8, 8),)).module())
    eq = equalize(net)
    x = np.random.default_rng(seed).random((64, 1, 8, 8))
    assert np.allclose(net.forward(x), eq.forward(x), rtol=1e-9, atol=1e-9)
    changed = {n.name for n, m in zip(net.nodes, eq.nodes) if hasattr(n, "terms")
               and any(not np.array_equal(a.weight, b.weight) for a, b in zip(n.terms, m.terms))}
    assert changed, "nothing was equalized"
    if cap:     # a ReLU6 layer is not homogeneous: its rows and bias keep their scale
        c3 = [n for n in net.nodes if getattr(n, "cap", None) is not None][0]
        assert np.array_equal(eq.node(c3.name).bias, c3.bias)
