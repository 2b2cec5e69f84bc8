"""Layer extraction: supported spellings, removed no-ops, and errors that name the layer."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snnc.compiler.errors import SnncError
from snnc.compiler.extract import extract_layers

from .conftest import Plain


def exported(model, example):
    return torch.export.export(model.eval(), (example,)).module()


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
    assert [layer.name for layer in net.layers] == ["a", "b", "c"]
    assert net.final == "log_softmax"
    for layer, mod in zip(net.layers, (model.a, model.b, model.c)):
        assert np.array_equal(layer.weight, mod.weight.detach().double().numpy())
    assert np.array_equal(net.layers[1].bias, np.zeros(8))
    x = torch.rand(5, 4, 4)
    want = torch.log_softmax(torch.from_numpy(net.forward(x.double().numpy())), dim=1)
    assert torch.allclose(model(x).double(), want, atol=1e-5)


@pytest.mark.parametrize("via", ["fx", "export"])
def test_sequential_with_flatten_dropout_softmax(via):
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(inplace=True), nn.Dropout(),
                          nn.ReLU(), nn.Identity(), nn.Linear(6, 3), nn.Softmax(dim=-1)).eval()
    src = model if via == "fx" else exported(model, torch.rand(2, 3, 4))
    net = extract_layers(src, (3, 4))
    assert [layer.name for layer in net.layers] == ["1", "6"]
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


LSTMNet = type("LSTMNet", (nn.Module,), {
    "__init__": lambda self: (nn.Module.__init__(self), setattr(self, "rnn", nn.LSTM(4, 4)),
                              setattr(self, "fc", nn.Linear(4, 2)))[0],
    "forward": lambda self, x: self.fc(self.rnn(x)[0]),
})


@pytest.mark.filterwarnings("ignore:The tensor attributes:UserWarning")  # torch exporting LSTM
@pytest.mark.parametrize("via", ["fx", "export"])
@pytest.mark.parametrize("model, shape, named", [
    (LSTMNet(), (3, 4), "nn.LSTM at 'rnn'"),
    (Plain(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2)), (1, 4, 4), "nn.Conv2d at 'layers.0'"),
    (Plain(nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 2)), (4,), "nn.Sigmoid at 'layers.1'"),
    (Plain(nn.Linear(4, 3), nn.ReLU6(), nn.Linear(3, 2)), (4,), "nn.ReLU6 at 'layers.1'"),
    (Plain(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2)), (4,), "nn.BatchNorm1d at 'layers.1'"),
])
def test_unsupported_layers_are_named(via, model, shape, named):
    src = model.eval() if via == "fx" else exported(model, torch.rand(2, *shape))
    with pytest.raises(SnncError) as info:
        extract_layers(src, shape)
    msg = str(info.value)
    assert msg.startswith(named)
    assert "is not supported: snnc compiles feed-forward linear networks (nn.Linear, nn.ReLU, " \
           "nn.Flatten, nn.Dropout)" in msg


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
    (Residual(), (4,), "does not follow the previous layer"),
    (TwoOutputs(), (4,), "must return exactly one tensor"),
    (Linear3D(), (3, 4), "receives a 3-D input.*add nn.Flatten"),
    (Plain(nn.Dropout(), nn.Flatten()), (4,), "has no nn.Linear layer"),
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
    assert [layer.name for layer in net.layers] == ["layers.0", "layers.0_2", "layers.4"]
