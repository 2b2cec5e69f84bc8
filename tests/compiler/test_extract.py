"""Extraction of MLPs: supported spellings, removed no-ops, and errors that name the layer.

Convolutional networks are in ``test_extract_cnn.py``.
"""

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snnc.compiler.errors import SnncError
from snnc.compiler.extract import extract_layers

from .conftest import Plain, exported


def dense(net):
    """``[(name, weight, bias)]`` of an extracted MLP (one dense term per layer)."""
    assert all(len(node.terms) == 1 and not node.terms[0].conv for node in net.nodes)
    return [(node.name, node.terms[0].weight, node.bias) for node in net.nodes]


class Functional(nn.Module):
    """F.relu, torch.relu and Tensor.relu, view/flatten spellings, trailing log_softmax."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(16, 8)
        self.b = nn.Linear(8, 8, bias=False)
        self.c = nn.Linear(8, 4)

    def forward(self, x):
        x = x.view(x.size(0), -1)
        x = F.relu(self.a(x))
        x = torch.relu(self.b(x)).relu()
        x = F.dropout(x, 0.5, self.training)
        return F.log_softmax(self.c(x.flatten(1)), dim=1)


@pytest.mark.parametrize("via", ["fx", "export", "export-dynamic-batch"])
def test_functional_spellings(via):
    torch.manual_seed(0)
    model = Functional().eval()
    if via == "fx":
        src = model
    elif via == "export":
        src = exported(model, torch.rand(3, 4, 4))
    else:  # x.size(0) becomes aten.sym_size, a shape computation beside the data path
        src = torch.export.export(model, (torch.rand(3, 4, 4),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},)).module()
    net = extract_layers(src, (4, 4))
    assert net.input_shape == (4, 4)
    layers = dense(net)
    assert [name for name, _, _ in layers] == ["a", "b", "c"]
    assert [node.relu for node in net.nodes] == [True, True, False]
    assert net.final == "log_softmax"
    for (_, w, _), mod in zip(layers, (model.a, model.b, model.c)):
        assert np.array_equal(w, mod.weight.detach().double().numpy())
    assert np.array_equal(layers[1][2], np.zeros(8))
    x = torch.rand(5, 4, 4)
    want = torch.log_softmax(torch.from_numpy(net.forward(x.double().numpy())), dim=1)
    assert torch.allclose(model(x).double(), want, atol=1e-5)


@pytest.mark.parametrize("via", ["fx", "export"])
def test_sequential_with_flatten_dropout_softmax(via):
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(inplace=True), nn.Dropout(),
                          nn.ReLU(), nn.Identity(), nn.Linear(6, 3), nn.Softmax(dim=-1)).eval()
    src = model if via == "fx" else exported(model, torch.rand(2, 3, 4))
    net = extract_layers(src, (3, 4))
    assert [name for name, _, _ in dense(net)] == ["1", "6"]
    assert net.final == "softmax"
    assert any("Dropout" in d for d in net.dropped)


def test_input_shape_defaults():
    model = nn.Sequential(nn.Linear(10, 4), nn.ReLU(), nn.Linear(4, 2))
    assert extract_layers(model).input_shape == (10,)
    # An exported program carries its example input's shape.
    assert extract_layers(exported(model, torch.rand(1, 10))).input_shape == (10,)
    with pytest.raises(SnncError, match="does not match the exported example"):
        extract_layers(exported(model, torch.rand(1, 10)), (11,))
    with pytest.raises(SnncError, match="check --input-shape"):
        extract_layers(model, (3, 3))
    # A network that starts with a convolution does not tell its input's height and width.
    with pytest.raises(SnncError, match="cannot tell .* input shape: pass --input-shape"):
        extract_layers(Plain(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2)))


LSTMNet = type("LSTMNet", (nn.Module,), {
    "__init__": lambda self: (nn.Module.__init__(self), setattr(self, "rnn", nn.LSTM(4, 4)),
                              setattr(self, "fc", nn.Linear(4, 2)))[0],
    "forward": lambda self, x: self.fc(self.rnn(x)[0]),
})


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x) * 2       # x * 2 folds into the input quantization; this does not


UNSUPPORTED = "is not supported: snnc compiles feed-forward convolutional and linear networks ("


@pytest.mark.filterwarnings("ignore:The tensor attributes:UserWarning")  # torch exporting LSTM
@pytest.mark.parametrize("via", ["fx", "export"])
@pytest.mark.parametrize("model, shape, named, why", [
    (LSTMNet(), (3, 4), "nn.LSTM at 'rnn'", UNSUPPORTED),
    (Plain(nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 2)), (4,), "nn.Sigmoid at 'layers.1'",
     UNSUPPORTED),
    (Plain(nn.Conv2d(2, 2, 3, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)), (2, 4, 4),
     "nn.Conv2d at 'layers.0'", "has groups=2: snnc supports groups=1"),
    (Plain(nn.Conv2d(1, 2, 3, dilation=2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)), (1, 6, 6),
     "nn.Conv2d at 'layers.0'", "has dilation=(2, 2): snnc supports dilation 1"),
    (Plain(nn.Conv2d(1, 2, 9), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)), (1, 10, 10),
     "nn.Conv2d at 'layers.0'", "has a 9x9 kernel: snnc supports kernels up to 7x7"),
    (Plain(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2, stride=1), nn.Flatten(), nn.Linear(8, 2)),
     (1, 5, 5), "nn.MaxPool2d at 'layers.2'", r"has stride \(1, 1\) and kernel \(2, 2\): snnc "
     "supports max pooling with stride equal to the kernel"),
    (Plain(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True), nn.Flatten(),
           nn.Linear(8, 2)), (1, 5, 5), "nn.MaxPool2d at 'layers.2'", "uses ceil_mode=True"),
    (Plain(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AvgPool2d(2, padding=1), nn.Flatten(),
           nn.Linear(8, 2)), (1, 4, 4), "nn.AvgPool2d at 'layers.2'", "pads by (1, 1): snnc supports "
     "average pooling without padding"),
    (Plain(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(8, 2)),
     (1, 5, 5), "nn.AdaptiveAvgPool2d at 'layers.2'", "maps 3x3 to 2x2: snnc supports it only "
     "when the output size divides the input"),
    (Plain(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), nn.ReLU(), nn.Flatten(),
           nn.Linear(8, 2)), (1, 2, 2), "nn.Conv2d at 'layers.0'",
     # torch.export spells the padding as its own operator (aten.pad) inside the layer
     "uses padding_mode='reflect': snnc supports zero padding only|pad.default. is not supported"),
    (Plain(nn.Linear(4, 3), nn.Hardtanh(-1.0, 1.0), nn.Linear(3, 2)), (4,),
     "nn.Hardtanh at 'layers.1'", "clips to [-1.0, 1.0]"),
    (Plain(nn.Linear(4, 3), nn.ReLU(), nn.BatchNorm1d(3), nn.Linear(3, 2)), (4,),
     "nn.BatchNorm1d at 'layers.2'", r"follows a ReLU after nn.Linear at 'layers.0'( \(.*\))?, not "
     "a convolution or linear layer: snnc folds BatchNorm into the preceding nn.Conv2d or nn.Linear"),
    (Plain(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(2, 2)),
     (1, 4, 4), None, None),
    (Scaled(), (4,), "mul", "scales or shifts a layer's output"),
])
def test_unsupported_layers_are_named(via, model, shape, named, why):
    if named is None:  # control: the same shape of network with supported layers passes
        extract_layers(model.eval() if via == "fx" else exported(model, torch.rand(2, *shape)), shape)
        return
    src = model.eval() if via == "fx" else exported(model, torch.rand(2, *shape))
    with pytest.raises(SnncError) as info:
        extract_layers(src, shape)
    msg = str(info.value)
    if named == "mul":  # fc(x) * 2: operator.mul when traced, aten.mul.Tensor when exported
        assert "mul" in msg.split(" scales")[0] and "scales or shifts a layer's output" in msg
        return
    assert msg.startswith(named), msg
    assert why in msg or re.search(why, msg), msg


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)) + x)


class TwoOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.fc(x)
        return y, y


class Linear3D(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x)


@pytest.mark.parametrize("model, shape, match", [
    (Plain(nn.Linear(4, 3), nn.ReLU()), (4,), "ends with a ReLU after nn.Linear at 'layers.0'; remove it"),
    (Plain(nn.Linear(4, 3), nn.Linear(3, 2)), (4,), "followed directly by nn.Linear at 'layers.1' without a ReLU"),
    (Plain(nn.ReLU(), nn.Linear(4, 2)), (4,), "comes before the first nn.Linear"),
    (Plain(nn.Flatten(0), nn.Linear(8, 2)), (4,), "only supports flattening each sample"),
    (Plain(nn.Linear(4, 2), nn.Softmax(dim=0)), (4,), "not taken over the class axis"),
    (Plain(nn.Linear(4, 3), nn.Softmax(dim=1), nn.Linear(3, 2)), (4,), "follows the final"),
    (Residual(), (4,), "the addition .* is followed by nn.Linear at 'fc2' without a ReLU"),
    (TwoOutputs(), (4,), "must return exactly one tensor"),
    (Linear3D(), (3, 4), "receives a 3-D input.*add nn.Flatten"),
    (Plain(nn.Dropout(), nn.Flatten()), (4,), "has no nn.Linear or nn.Conv2d layer"),
])
def test_structure_errors(model, shape, match):
    with pytest.raises(SnncError, match=match):
        extract_layers(model.eval(), shape)


def test_untraceable_module_suggests_export():
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow defeats symbolic tracing
                return self.fc(x)
            return -self.fc(x)
    with pytest.raises(SnncError, match="could not trace.*torch.export"):
        extract_layers(Dynamic(), (4,))


def test_training_mode_export_is_refused():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Dropout(0.5), nn.Linear(3, 2)).train()
    gm = torch.export.export(model, (torch.rand(2, 4),)).module()
    with pytest.raises(SnncError, match="exported in training mode: call model.eval()"):
        extract_layers(gm)


def test_extracted_names_are_unique():
    shared = nn.Linear(4, 4)
    model = Plain(shared, nn.ReLU(), shared, nn.ReLU(), nn.Linear(4, 2))
    net = extract_layers(model, (4,))
    assert [name for name, _, _ in dense(net)] == ["layers.0", "layers.0_2", "layers.4"]


def _poisoned(which):
    torch.manual_seed(0)
    model = Plain(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2)).eval()
    with torch.no_grad():
        if which == "weight":
            model.layers[0].weight[0, :3] = float("nan")
        elif which == "bias":
            model.layers[3].bias[1] = float("inf")
        else:
            model.layers[1].running_var[2] = float("nan")
    return model


@pytest.mark.parametrize("via", ["fx", "export"])
@pytest.mark.parametrize("which, match", [
    ("weight", r"^layer 'layers.0' has 3 NaN/inf weight values: the model file is corrupt or "
               r"training diverged; fix the weights"),
    ("bias", r"^layer 'layers.3' has 1 NaN/inf bias value: "),
    ("running_var", r"^layer 'layers.1' has 1 NaN/inf running_var value: "),
])
def test_non_finite_parameters_are_named(via, which, match):
    model = _poisoned(which)
    src = model if via == "fx" else exported(model, torch.rand(2, 4))
    with pytest.raises(SnncError, match=match):
        extract_layers(src, (4,))


def test_negative_batchnorm_variance_is_named():
    model = _poisoned(None)
    with torch.no_grad():
        model.layers[1].running_var[2] = -5.0
    with pytest.raises(SnncError, match=r"layer 'layers.0' has NaN/inf weights or biases after "
                                        r"folding its BatchNorm"):
        extract_layers(model, (4,))


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x, y):
        return self.fc(x + y)


def test_two_inputs_name_the_users_class():
    with pytest.raises(SnncError, match=r"^tests\.compiler\.test_extract\.TwoInputs's forward "
                                        r"takes 2 inputs \(x, y\); snnc compiles networks with a "
                                        r"single input tensor"):
        extract_layers(TwoInputs(), (4,))


def test_two_inputs_of_an_exported_model():
    gm = torch.export.export(TwoInputs().eval(), (torch.rand(2, 4), torch.rand(2, 4))).module()
    with pytest.raises(SnncError, match=r"^the exported model's forward takes 2 inputs \(x, y\)"):
        extract_layers(gm)
