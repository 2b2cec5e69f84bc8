"""Model loading: the three formats, untrusted pickles, corrupt files, --arch errors."""

import numpy as np
import pytest
import torch
from torch import nn

from snnc.compiler.errors import SnncError
from snnc.compiler.load import load_model

from .conftest import save_all_formats, seeded_mlp


def _weights(module):
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def test_three_formats_load_the_same_weights(nets, tmp_path):
    model = seeded_mlp(nets)
    paths = save_all_formats(model, tmp_path)
    exported = load_model(paths["exported"])
    sd = load_model(paths["state_dict"], arch="tinynets:MLP")
    pickled = load_model(paths["pickled"], trust_model=True)
    assert (exported.format, sd.format, pickled.format) == ("exported", "state_dict", "pickled")
    x = torch.rand(2, 6)
    want = model(x)
    for loaded in (exported, sd, pickled):
        assert torch.equal(loaded.module(x), want)
    assert all(np.array_equal(a, b) for a, b in
               zip(_weights(model).values(), _weights(sd.module).values()))


def test_arch_from_a_file_path(nets, tmp_path):
    paths = save_all_formats(seeded_mlp(nets), tmp_path)
    loaded = load_model(paths["state_dict"], arch=str(tmp_path / "tinynets.py") + ":MLP")
    assert loaded.format == "state_dict"


def test_untrusted_pickle_is_refused_with_guidance(nets, tmp_path):
    paths = save_all_formats(seeded_mlp(nets), tmp_path)
    with pytest.raises(SnncError) as info:
        load_model(paths["pickled"])
    msg = str(info.value)
    assert "tinynets.MLP" in msg
    assert "runs code" in msg
    assert "--trust-model" in msg
    assert "torch.export.save(torch.export.export(model, (example,)), 'model.pt2')" in msg
    assert "state_dict()" in msg and "--arch" in msg


def test_trusted_pickle_whose_class_is_gone(tmp_path, monkeypatch):
    class Local(nn.Module):  # pickled by reference to a class nobody can import
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)
    Local.__module__, Local.__qualname__ = "vanished_module", "Local"
    import sys
    import types
    mod = types.ModuleType("vanished_module")
    mod.Local = Local
    monkeypatch.setitem(sys.modules, "vanished_module", mod)
    torch.save(Local(), tmp_path / "m.pt")
    monkeypatch.delitem(sys.modules, "vanished_module")
    with pytest.raises(SnncError, match="cannot be imported"):
        load_model(tmp_path / "m.pt", trust_model=True)


def test_state_dict_needs_arch(nets, tmp_path):
    paths = save_all_formats(seeded_mlp(nets), tmp_path)
    with pytest.raises(SnncError, match="state_dict.*--arch module:Class"):
        load_model(paths["state_dict"])


@pytest.mark.parametrize("arch, match", [
    ("tinynets", "must look like module:Class"),
    ("tinynets:", "must look like module:Class"),
    ("no_such_module_xyz:MLP", "cannot import module 'no_such_module_xyz'"),
    ("tinynets:Missing", "has no attribute 'Missing'"),
    ("tinynets:NOT_A_CLASS", "not a torch.nn.Module subclass"),
    ("tinynets:NeedsArgs", "cannot be created without arguments"),
    ("tinynets:Broken", "cannot be created without arguments.*cannot build"),
    ("missing_file.py:MLP", "does not exist"),
])
def test_arch_errors(nets, tmp_path, arch, match):
    paths = save_all_formats(seeded_mlp(nets), tmp_path)
    with pytest.raises(SnncError, match=match):
        load_model(paths["state_dict"], arch=arch)


def test_state_dict_key_and_shape_mismatch(nets, tmp_path):
    state = seeded_mlp(nets).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["fc2.bias"]
    torch.save(state, tmp_path / "keys.pt")
    with pytest.raises(SnncError, match=r"missing keys fc2\.bias; unexpected keys extra\.weight"):
        load_model(tmp_path / "keys.pt", arch="tinynets:MLP")
    state = seeded_mlp(nets).state_dict()
    state["fc1.weight"] = torch.zeros(4, 6)
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(SnncError, match=r"fc1\.weight is \[4, 6\] in the file, \[5, 6\] in the model"):
        load_model(tmp_path / "shape.pt", arch="tinynets:MLP")


def test_arch_refused_for_files_that_hold_the_network(nets, tmp_path):
    paths = save_all_formats(seeded_mlp(nets), tmp_path)
    with pytest.raises(SnncError, match="--arch is only for state_dict files.*drop --arch"):
        load_model(paths["exported"], arch="tinynets:MLP")
    with pytest.raises(SnncError, match="--arch is only for state_dict files"):
        load_model(paths["pickled"], arch="tinynets:MLP", trust_model=True)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(SnncError, match="does not exist"):
        load_model(tmp_path / "nope.pt2")
    with pytest.raises(SnncError, match="is not a file"):
        load_model(tmp_path)


@pytest.mark.parametrize("fmt", ["exported", "state_dict", "pickled"])
def test_truncated_files(nets, tmp_path, fmt):
    paths = save_all_formats(seeded_mlp(nets), tmp_path)
    data = paths[fmt].read_bytes()
    bad = tmp_path / ("cut" + paths[fmt].suffix)
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(SnncError, match="corrupt|truncated"):
        load_model(bad, arch="tinynets:MLP" if fmt == "state_dict" else None, trust_model=True)
    with pytest.raises(SnncError, match="corrupt|truncated"):
        load_model(bad)


def test_non_model_files(tmp_path):
    (tmp_path / "text.pt").write_text("hello, this is not a model\n" * 10)
    with pytest.raises(SnncError, match="cannot read .*text.pt"):
        load_model(tmp_path / "text.pt")
    np.savez(tmp_path / "data.npz", x=np.zeros(3))
    with pytest.raises(SnncError, match="zip archive but not a PyTorch model"):
        load_model(tmp_path / "data.npz")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "ckpt.pt")
    with pytest.raises(SnncError, match="dict that is not a state_dict.*'epoch'"):
        load_model(tmp_path / "ckpt.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(SnncError, match="holds a Tensor, not a model"):
        load_model(tmp_path / "tensor.pt")
