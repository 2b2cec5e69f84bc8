"""Compile-report checks: SNN accuracy on the calibration set and the warnings in meta."""

import numpy as np
import torch
from torch import nn

from snnc.compiler.data import quantize_inputs
from snnc.compiler.pipeline import compile_model, compile_module
from snnc.compiler.report import accuracy_warnings
from snnc.sim.reference import run

OPTS = {"bits": 4, "timesteps": 4, "max_strength": 7}


def mlp(seed=0, d=6, classes=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 8), nn.ReLU(), nn.Linear(8, classes)).eval()


def save(model, path, d=6):
    torch.export.save(torch.export.export(model, (torch.rand(2, d),)), path)
    return path


def test_snn_accuracy_on_the_calibration_set(tmp_path):
    seed = 0
    print(f"seed {seed}")
    x = np.random.default_rng(seed).random((300, 6))
    model = mlp(seed)
    y = model(torch.from_numpy(x).float()).argmax(1).numpy()
    graph, meta = compile_model(save(model, tmp_path / "net.pt2"), calib=(x, y), **OPTS)
    pred = run(graph, quantize_inputs(x, meta)).prediction
    assert meta["snn_calib_accuracy"] == int(np.sum(pred == y)) / 300
    assert meta["ann_calib_accuracy"] == 1.0
    lost = meta["ann_calib_accuracy"] - meta["snn_calib_accuracy"] > 0.03
    assert lost == any("points below the float network" in w for w in meta["warnings"])
    # no labels, or compile_module (QAT's per-epoch compile): not measured
    assert compile_model(tmp_path / "net.pt2", calib=(x, None), **OPTS)[1]["snn_calib_accuracy"] \
        is None
    [(_, m)] = compile_module(model, [OPTS], calib=(x, y))
    assert m["snn_calib_accuracy"] is None and m["ann_calib_accuracy"] == 1.0
    [(_, m)] = compile_module(model, [OPTS], calib=(x, y), evaluate=True)
    assert m["snn_calib_accuracy"] == meta["snn_calib_accuracy"]


def test_accuracy_loss_warning():
    (w,) = accuracy_warnings(0.90, 0.95)
    assert w.startswith("the SNN's accuracy on the calibration set is 90.0%, 5.0 points below "
                        "the float network's 95.0%: fine-tune with quantization-aware training "
                        "(snnc.models.qat.finetune")
    assert "--bits or --timesteps" in w
    assert accuracy_warnings(0.93, 0.95) == () and accuracy_warnings(None, 0.95) == ()


def test_weight_outlier_warning(tmp_path):
    model = mlp(d=20)
    with torch.no_grad():
        model[0].weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
        model[0].weight[0, 0] = 50.0
    x = np.random.default_rng(0).random((64, 20))
    _, meta = compile_model(save(model, tmp_path / "net.pt2", d=20), calib=(x, None), **OPTS)
    (w,) = [w for w in meta["warnings"] if w.startswith("layer '0'")]
    assert "of its nonzero weights quantize to 0 at 4 bits: its largest |w| is 50" in w
    assert "99th percentile |w|" in w
    # the same layer without the outlier: no warning
    with torch.no_grad():
        model[0].weight[0, 0] = 0.05
    _, meta = compile_model(save(model, tmp_path / "ok.pt2", d=20), calib=(x, None), **OPTS)
    assert not any("quantize to 0" in w for w in meta["warnings"])


class Scaled(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x / 255)


def test_integer_inputs_and_label_range_warnings(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (40, 6)).astype(np.float64)
    y = np.arange(40) % 5                                     # 5 labels, 3 classes
    model = mlp()
    _, meta = compile_model(save(model, tmp_path / "net.pt2"), calib=(x, y), **OPTS)
    assert meta["warnings"][:2] == [
        "the calibration inputs are all integers, up to 255 (raw pixel values?): the network is "
        "compiled for inputs on this scale, so the data given to snnc simulate / verify and to "
        "the hardware must use the same scale; if the model was trained on scaled inputs (e.g. "
        "x / 255), scale the calibration data the same way",
        "the calibration labels go up to 4, but the readout has 3 classes (labels 0..2): check "
        "the labels or the model's last layer"]
    # a model that scales its own input expects raw integers: no warning
    _, meta = compile_model(save(Scaled(model).eval(), tmp_path / "scaled.pt2"),
                            calib=(x, None), **OPTS)
    assert not any("integers" in w for w in meta["warnings"])
    _, meta = compile_model(tmp_path / "net.pt2", calib=(x / 255, y % 3), **OPTS)
    assert not any("integers" in w or "labels" in w for w in meta["warnings"])
