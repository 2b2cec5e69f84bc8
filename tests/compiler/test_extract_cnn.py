"""Extraction of convolutional networks: BatchNorm folding, pooling, residual additions, rewrites
that keep the float network exact, and errors that name the layer."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snnc.compiler.errors import SnncError
from snnc.compiler.extract import extract_layers
from snnc.compiler.floatnet import Pool

from .conftest import Plain, exported

VIAS = ["fx", "export"]


def source(model, shape, via):
    model = model.double().eval()
    return model if via == "fx" else exported(model, torch.rand(2, *shape, dtype=torch.float64))


def random_bn(bn, gen):
    """Give a BatchNorm non-trivial running statistics and affine parameters."""
    n = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
        bn.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
        bn.weight.copy_(torch.rand(n, generator=gen) * 2 - 0.5)   # some negative gammas
        bn.bias.copy_(torch.rand(n, generator=gen) - 0.5)
    return bn


def assert_same_function(net, model, shape, n=16, scale=1.0):
    x = torch.rand(n, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    want = model.double().eval()(x * scale).detach().numpy()
    np.testing.assert_allclose(net.forward((x * scale).numpy()), want, rtol=1e-10, atol=1e-12)


def kinds(net):
    return [(n.name, "pool-" + n.kind if isinstance(n, Pool) else ("relu" if n.relu else "readout"))
            for n in net.nodes]


@pytest.mark.parametrize("via", VIAS)
def test_batchnorm_is_folded_exactly(via):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = Plain(nn.Conv2d(2, 3, 3, stride=2, padding=1), random_bn(nn.BatchNorm2d(3), gen),
                  nn.ReLU(), nn.Flatten(), nn.Linear(12, 5, bias=False),
                  random_bn(nn.BatchNorm1d(5), gen), nn.ReLU(), nn.Linear(5, 2))
    net = extract_layers(source(model, (2, 4, 4), via), (2, 4, 4))
    assert kinds(net) == [("layers.0", "relu"), ("layers.4", "relu"), ("layers.7", "readout")]
    conv, bn = model.layers[0], model.layers[1]
    s = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    want_w = conv.weight.detach().numpy() * s[:, None, None, None]
    want_b = (conv.bias.detach().numpy() - bn.running_mean.numpy()) * s + bn.bias.detach().numpy()
    term = net.nodes[0].terms[0]
    assert term.conv and term.stride == (2, 2) and term.padding == (1, 1)
    np.testing.assert_allclose(term.weight, want_w, rtol=1e-14)
    np.testing.assert_allclose(net.nodes[0].bias, np.repeat(want_b, 4), rtol=1e-14, atol=1e-15)
    assert net.nodes[0].shape == (3, 2, 2)
    assert_same_function(net, model, (2, 4, 4))
    assert any("BatchNorm1d" in d and "folded" in d for d in net.dropped)


class Block(nn.Module):
    def __init__(self, c, spelling):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.spelling = spelling

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.spelling == "+=":
            out += x
        elif self.spelling == "torch.add":
            out = torch.add(x, out)
        elif self.spelling == "method":
            out = out.add(x)
        else:
            out = out + x
        return torch.relu(out)


class SmallResNet(nn.Module):
    def __init__(self, spelling="+"):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = random_bn(nn.BatchNorm2d(4), gen)
        self.relu6 = nn.ReLU6()
        self.pool = nn.MaxPool2d(2)
        self.block = Block(4, spelling)
        random_bn(self.block.bn1, gen)
        random_bn(self.block.bn2, gen)
        self.conv3 = nn.Conv2d(4, 6, 3, stride=2, padding=(1, 0))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = self.pool(self.relu6(self.bn1(self.conv1(x))))
        x = self.block(x)
        x = F.relu(self.conv3(x))
        return F.log_softmax(self.fc(self.drop(torch.flatten(self.gap(x), 1))), dim=1)


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("spelling", ["+", "+=", "torch.add", "method"])
def test_residual_network(via, spelling):
    torch.manual_seed(0)
    model = SmallResNet(spelling)
    net = extract_layers(source(model, (1, 8, 10), via), (1, 8, 10))
    assert kinds(net) == [("conv1", "relu"), ("pool", "pool-max"), ("block.conv1", "relu"),
                          ("block.conv2", "relu"), ("conv3", "relu"), ("gap", "pool-avg"),
                          ("fc", "readout")]
    conv1, pool, _, block, conv3, gap, fc = net.nodes
    assert conv1.cap == 6.0 and conv1.shape == (4, 8, 10) and pool.shape == (4, 4, 5)
    assert pool.kernel == (2, 2) and pool.src == "conv1"
    # The shortcut: block.conv2 reads block.conv1 (3x3) and the pool's output (a 1x1 identity).
    main, shortcut = sorted(block.terms, key=lambda t: t.identity)
    assert (main.src, main.weight.shape, main.identity) == ("block.conv1", (4, 4, 3, 3), False)
    assert (shortcut.src, shortcut.identity) == ("pool", True)
    assert np.array_equal(shortcut.weight, np.eye(4).reshape(4, 4, 1, 1))
    assert conv3.shape == (6, 2, 2) and conv3.terms[0].padding == (1, 0)
    assert gap.kernel == (2, 2) and gap.shape == (6, 1, 1)
    assert fc.terms[0].src == "gap" and net.final == "log_softmax"
    x = torch.rand(16, 1, 8, 10, dtype=torch.float64) * 3   # large enough to reach the ReLU6 cap
    logits = model.double().eval()(x)
    np.testing.assert_allclose(torch.log_softmax(torch.from_numpy(net.forward(x.numpy())), 1),
                               logits.detach(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("via", VIAS)
def test_max_pool_before_the_relu_moves_after_it(via):
    # relu(maxpool(z)) == maxpool(relu(z)): the ReLU becomes the spiking layer, the pool follows.
    model = Plain(nn.Conv2d(1, 2, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
                  nn.Linear(8, 3))
    net = extract_layers(source(model, (1, 4, 4), via), (1, 4, 4))
    assert kinds(net) == [("layers.0", "relu"), ("layers.1", "pool-max"), ("layers.4", "readout")]
    assert net.nodes[0].shape == (2, 4, 4) and net.nodes[1].shape == (2, 2, 2)
    assert_same_function(net, model, (1, 4, 4))


@pytest.mark.parametrize("via", VIAS)
def test_average_pool_of_a_convolution_is_one_strided_convolution(via):
    # avgpool2(conv3x3 stride 1) == conv4x4 stride 2 (before the ReLU: both are linear).
    model = Plain(nn.Conv2d(2, 3, 3, padding=1), nn.AvgPool2d(2), nn.ReLU(), nn.Flatten(),
                  nn.Linear(12, 2))
    net = extract_layers(source(model, (2, 5, 4), via), (2, 5, 4))
    assert kinds(net) == [("layers.0", "relu"), ("layers.4", "readout")]
    term = net.nodes[0].terms[0]
    assert term.weight.shape == (3, 2, 4, 4) and term.stride == (2, 2) and term.padding == (1, 1)
    assert net.nodes[0].shape == (3, 2, 2)
    assert_same_function(net, model, (2, 5, 4))


class Flat(nn.Module):
    """Takes flattened 8x8 images and reshapes them; global average pool spelled as a mean."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        x = F.relu(self.conv(x.view(-1, 1, 8, 8)))
        return self.fc(F.avg_pool2d(x, 2).mean((2, 3)))


@pytest.mark.parametrize("via", VIAS)
def test_input_view_and_global_mean(via):
    model = Flat()
    net = extract_layers(source(model, (64,), via), (64,))
    assert net.input_shape == (1, 8, 8)
    assert [(n.name, n.kernel) for n in net.nodes if isinstance(n, Pool)] == \
        [(net.nodes[1].name, (2, 2)), (net.nodes[2].name, (4, 4))]
    assert_same_function(net, model, (64,))


class Broadcast(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(32, 2)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x) + x), 1))


class ConvConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, padding=1)
        self.b = nn.Conv2d(2, 2, 3, padding=1)
        self.fc = nn.Linear(32, 2)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.b(self.a(x))), 1))


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("model, match", [
    (Broadcast(), r"adds shapes \[2, 4, 4\] and \[1, 4, 4\]: snnc adds branches of the same shape"),
    (ConvConv(), r"nn.Conv2d at 'a'.* is followed directly by nn.Conv2d at 'b'.* without a ReLU"),
    (Plain(nn.MaxPool2d(2), nn.Conv2d(1, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)),
     r"^nn.MaxPool2d at 'layers.0'.* pools the model's input"),
    (Plain(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.BatchNorm2d(2),
           nn.Flatten(), nn.Linear(8, 2)),
     r"^nn.BatchNorm2d at 'layers.3'.* follows nn.MaxPool2d at 'layers.2'.*, not a convolution "
     "or linear layer"),
])
def test_cnn_structure_errors(via, model, match):
    with pytest.raises(SnncError, match=match):
        extract_layers(source(model, (1, 4, 4), via), (1, 4, 4))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("via", VIAS)
def test_padding_same_with_an_even_kernel_asks_for_explicit_padding(via):
    model = Plain(nn.Conv2d(1, 2, 2, padding="same"), nn.ReLU(), nn.Flatten(), nn.Linear(32, 2))
    with pytest.raises(SnncError, match=r"nn.Conv2d at 'layers.0'.* uses padding='same' with a "
                                        r"2x2 kernel.*asymmetrically.*explicit padding"):
        extract_layers(source(model, (1, 4, 4), via), (1, 4, 4))


@pytest.mark.parametrize("via", VIAS)
def test_padding_same_with_an_odd_kernel_is_symmetric(via):
    torch.manual_seed(0)
    model = Plain(nn.Conv2d(1, 2, 5, padding="same"), nn.ReLU(), nn.Flatten(), nn.Linear(32, 2))
    net = extract_layers(source(model, (1, 4, 4), via), (1, 4, 4))
    assert net.nodes[0].terms[0].padding == (2, 2)
    assert_same_function(net, model, (1, 4, 4))
