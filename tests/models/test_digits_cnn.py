"""The demo CNN: deterministic training, export, and the accuracy bars of the CNN demo."""

import numpy as np
import pytest
import torch

from snnc.demo import cnn_demo_reference
from snnc.compiler.load import load_model
from snnc.models.digits_cnn import (CNN_MAX_STRENGTH, CNN_TIMESTEPS, cnn_split, export_cnn,
                                    train_digits_cnn)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo's reference part at its defaults, 8/4/2 bits (the CNN is trained once)."""
    return cnn_demo_reference(tmp_path_factory.mktemp("cnn"), bits=4, timesteps=CNN_TIMESTEPS,
                              max_strength=CNN_MAX_STRENGTH, table_timesteps=(CNN_TIMESTEPS,))


def gap(demo, bits):
    return demo["ann_accuracy"] - demo["table"][(bits, CNN_TIMESTEPS)][0]


def test_cnn_demo_meets_the_8_and_4_bit_bars(demo):
    assert demo["ann_accuracy"] >= 0.97
    assert gap(demo, 8) <= 0.01
    assert gap(demo, 4) <= 0.02
    graph = demo["graph"]
    assert [p.name for p in graph.populations] == [
        "conv1", "pool1", "block.conv1", "block.conv2", "conv3", "pool2", "fc"]
    assert graph.timesteps == CNN_TIMESTEPS and demo["meta"]["bits"] == 4
    assert demo["report"]["samples"] == 540


def test_cnn_demo_2_bit_bar_with_quantization_aware_training(demo):
    """Ternary weights quantized after training lose far more than 5 points; after
    quantization-aware fine-tuning (snnc.models.qat) the 2-bit SNN is within 5 points.

    The bar holds with room: over seeds 0-4, on this CPU's kernels and on torch's portable ones,
    the gap at T=2 was 0.93-3.52 points (benchmarks/qat_spread.py; README). Post-training
    ternary weights lose about 40."""
    assert gap(demo, "2qat") <= 0.05
    assert gap(demo, 2) > 0.2                           # what QAT is for: not a bar that cannot fail
    assert demo["qat_path"].name == "digits_cnn_qat2.pt2"


def test_cnn_training_is_deterministic(tmp_path):
    a, b = train_digits_cnn(0, epochs=1), train_digits_cnn(0, epochs=1)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    loaded = load_model(export_cnn(a, tmp_path / "cnn.pt2"))
    x = torch.from_numpy(cnn_split()[2][:7])
    assert loaded.format == "exported" and torch.equal(loaded.module(x), a(x))
    assert np.array_equal(a(x.reshape(7, 64)).detach(), a(x).detach())   # flattened inputs too
