"""Shared helpers for the compiler tests: tiny models and an importable model module."""

import sys
import textwrap

import pytest
import torch
from torch import nn

NETS_SOURCE = textwrap.dedent('''
    import torch
    from torch import nn
    import torch.nn.functional as F


    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(6, 5)
            self.drop = nn.Dropout(0.3)
            self.fc2 = nn.Linear(5, 3)

        def forward(self, x):
            return self.fc2(self.drop(F.relu(self.fc1(x))))


    class SameCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, padding='same')
            self.fc = nn.Linear(8 * 4 * 4, 3)

        def forward(self, x):
            return self.fc(torch.flatten(F.max_pool2d(F.relu(self.conv1(x)), 2), 1))


    class NeedsArgs(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.fc = nn.Linear(6, width)


    class Broken(nn.Module):
        def __init__(self):
            raise RuntimeError("cannot build")


    NOT_A_CLASS = 3
''')


@pytest.fixture
def nets(tmp_path, monkeypatch):
    """The module ``tinynets`` written into ``tmp_path`` (the current directory), imported."""
    (tmp_path / "tinynets.py").write_text(NETS_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tinynets", raising=False)
    import tinynets
    yield tinynets
    sys.modules.pop("tinynets", None)


def exported(model, example):
    """``model`` through torch.export (eval mode), as snnc loads a .pt2: ``ep.module()``."""
    return torch.export.export(model.eval(), (example,)).module()


def seeded_mlp(nets, seed=0):
    torch.manual_seed(seed)
    return nets.MLP().eval()


def calib_data(n=64, d=6, seed=0, signed=False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=gen)
    if signed:
        x = 2 * x - 1
    y = torch.randint(0, 3, (n,), generator=gen)
    return x.numpy().astype("float64"), y.numpy()


def save_all_formats(model, tmp_path, example_shape=(2, 6)):
    """Write ``model`` as .pt2, state_dict and pickle (same stem, separate dirs)."""
    paths = {}
    for kind in ("exported", "state_dict", "pickled"):
        (tmp_path / kind).mkdir()
    paths["exported"] = tmp_path / "exported" / "net.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(example_shape),)), paths["exported"])
    paths["state_dict"] = tmp_path / "state_dict" / "net.pt"
    torch.save(model.state_dict(), paths["state_dict"])
    paths["pickled"] = tmp_path / "pickled" / "net.pt"
    torch.save(model, paths["pickled"])
    return paths


class Plain(nn.Module):
    """A module defined in a test file, for extraction tests that need no file."""

    def __init__(self, *layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x
