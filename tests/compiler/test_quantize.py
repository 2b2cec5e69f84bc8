"""Weight quantization (ranges, MSE-optimal scale), input scale, calibration percentiles."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from snnc.compiler.errors import SnncError
from snnc.compiler.floatnet import FloatNet
from snnc.compiler.quantize import (SCALE_FACTORS, calibrate, input_scale, quantize_weights,
                                    round_half_away)

finite = st.floats(-4, 4, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=60, deadline=None)
@given(w=arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=finite),
       bits=st.sampled_from([8, 4, 2]))
def test_quantized_weights_stay_in_range(w, bits):
    q = quantize_weights(w, bits)
    limit = {8: 127, 4: 7, 2: 1}[bits]
    assert q.values.dtype == np.int64
    assert int(np.abs(q.values).max()) <= limit
    assert q.scale > 0
    if np.abs(w).max() > 0:
        # The chosen scale is one of the candidates and no candidate has a lower error.
        wmax = np.abs(w).max()
        errors = [np.mean((np.clip(round_half_away(w / (wmax * f / limit)), -limit, limit)
                           * (wmax * f / limit) - w) ** 2) for f in SCALE_FACTORS]
        assert q.mse == min(errors)
        assert q.scale == wmax * SCALE_FACTORS[errors.index(min(errors))] / limit


def test_two_bits_is_ternary():
    rng = np.random.default_rng(0)
    q = quantize_weights(rng.normal(size=(20, 30)), 2)
    assert set(np.unique(q.values).tolist()) == {-1, 0, 1}


def test_mse_search_clips_an_outlier():
    # One outlier (3.0) and nine weights of 1.0, ternary. f = 1 (scale 3) rounds the nine to 0:
    # error 9 * 1**2 = 9. f = 0.4 (scale 1.2) maps all ten to 1: (3-1.2)**2 + 9 * 0.2**2 = 3.6,
    # the minimum of (3-s)**2 + 9 (1-s)**2, at s = 1.2.
    w = np.array([[3.0] + [1.0] * 9])
    q = quantize_weights(w, 2)
    assert q.values.tolist() == [[1] * 10]
    assert q.scale == pytest.approx(1.2)
    assert q.mse == pytest.approx(3.6 / 10)
    plain = quantize_weights(w, 2, factors=(1.0,))
    assert plain.values.tolist() == [[1] + [0] * 9]


def test_exact_grid_weights_quantize_exactly():
    w = np.array([[0.7, -0.3], [0.0, 0.2]])
    q = quantize_weights(w, 4)
    assert q.values.tolist() == [[7, -3], [0, 2]]
    assert q.scale == pytest.approx(0.1)


def test_zero_matrix_and_bad_bits():
    q = quantize_weights(np.zeros((2, 3)), 4)
    assert q.values.tolist() == [[0, 0, 0], [0, 0, 0]] and q.scale == 1.0
    with pytest.raises(SnncError, match="--bits must be one of 8, 4, 2, not 3"):
        quantize_weights(np.ones((2, 2)), 3)


def test_round_half_away_from_zero():
    assert round_half_away([0.5, 1.5, 2.5, -0.5, -2.5, 0.49]).tolist() == [1, 2, 3, -1, -3, 0]


def test_input_scale():
    assert input_scale(np.array([[0.0, 2.55], [1.0, 0.0]])) == (pytest.approx(0.01), False)
    assert input_scale(np.array([[-1.27, 0.5]])) == (pytest.approx(0.01), True)
    with pytest.raises(SnncError, match="all zero"):
        input_scale(np.zeros((3, 2)))


def identity_net(hidden_bias=0.0):
    one = np.array([[1.0]])
    return FloatNet.from_dense((1,), (("h", one, np.array([hidden_bias])), ("o", one, np.zeros(1))))


def test_calibration_percentile():
    x = np.arange(1000, dtype=np.float64).reshape(-1, 1)   # hidden activations are x itself
    assert calibrate(identity_net(), x, percentile=50).lambdas == (499.5,)
    assert calibrate(identity_net(), x, percentile=100).lambdas == (999.0,)
    cal = calibrate(identity_net(), x, percentile=99.9)
    assert cal.lambdas == (pytest.approx(np.percentile(np.arange(1000), 99.9)),)
    assert cal.input_scale == pytest.approx(999 / 255) and cal.input_signed is False
    assert cal.samples == 1000 and cal.ann_accuracy is None


def test_calibration_fallbacks_and_accuracy():
    x = np.zeros((100, 1))
    x[-1] = 5.0                                   # the 50th percentile of the layer is 0
    cal = calibrate(identity_net(), x, np.zeros(100, dtype=np.int64), percentile=50)
    assert cal.lambdas == (5.0,) and "using the maximum" in cal.notes[0]
    assert cal.ann_accuracy == 1.0
    dead = calibrate(identity_net(hidden_bias=-10.0), x, percentile=50)
    assert dead.lambdas == (1.0,) and "never activates" in dead.notes[0]


@pytest.mark.parametrize("p", [0, -1, 100.5])
def test_calibration_percentile_range(p):
    with pytest.raises(SnncError, match=r"--percentile must be in \(0, 100\]"):
        calibrate(identity_net(), np.ones((3, 1)), percentile=p)


def test_relu6_caps_the_activation_scale():
    one = np.array([[1.0]])
    net = FloatNet.from_dense((1,), (("h", one, np.zeros(1)), ("o", one, np.zeros(1))))
    capped = FloatNet((1,), (dataclasses.replace(net.nodes[0], cap=6.0), net.nodes[1]))
    x = np.linspace(0, 10, 101).reshape(-1, 1)        # activations up to 10, 6 after the cap
    assert calibrate(net, x, percentile=99).lambdas == (pytest.approx(np.percentile(x, 99)),)
    assert calibrate(capped, x, percentile=99).lambdas == (6.0,)
    assert capped.forward(x).max() == 6.0


# Model-based scales (no calibration data) ------------------------------------------------------

def test_activation_bounds_by_hand():
    """x in [0, 1]^2; h = relu([1, -2] x + 0.5) is in [0, 1.5]; out = 3 h - 1 in [-1, 3.5]."""
    from snnc.compiler.quantize import activation_bounds, calibrate_from_bounds
    net = FloatNet.from_dense((2,), [("h", [[1.0, -2.0]], [0.5]), ("out", [[3.0]], [-1.0])])
    b = activation_bounds(net)
    assert b["h"][0].tolist() == [0.0] and b["h"][1].tolist() == [1.5]
    assert b["out"][0].tolist() == [-1.0] and b["out"][1].tolist() == [3.5]
    cal = calibrate_from_bounds(net)
    assert cal.lambdas == (1.5,) and cal.input_scale == 1 / 255 and not cal.input_signed
    assert cal.readout_lambda == 3.5 and cal.samples == 0
    cal = calibrate_from_bounds(net, (-1.0, 1.0))      # h in [0, 3.5]
    assert cal.lambdas == (3.5,) and cal.input_signed and cal.input_scale == 1 / 127
    with pytest.raises(SnncError, match="LO < HI"):
        activation_bounds(net, (1.0, 1.0))


def test_activation_bounds_hold_on_random_inputs(seed):
    """On CNNs with max and average pools, a residual sum, a ReLU6 cap and an input transform,
    no activation of any input in the range leaves its bounds (the scales never saturate)."""
    import torch
    from torch import nn
    from snnc.compiler.extract import extract_layers
    from snnc.compiler.quantize import activation_bounds

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(2, 4, 3, padding=1)
            self.c2 = nn.Conv2d(4, 4, 3, padding=1)
            self.s = nn.Conv2d(2, 4, 1)
            self.c3 = nn.Conv2d(4, 6, 2, stride=2)
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            x = (x - 0.3) / 0.2
            a = torch.relu(self.c1(x))
            b = torch.nn.functional.relu6(self.c2(a) + self.s(x))
            p = torch.nn.functional.avg_pool2d(b, 2)                    # 4 x 4
            c = torch.nn.functional.max_pool2d(torch.relu(self.c3(p)), 2)   # 1 x 1
            return self.fc(torch.flatten(c, 1))

    torch.manual_seed(seed % (2 ** 31))
    print("seed", seed)
    model = Net().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    ep = torch.export.export(model, (torch.zeros(2, 2, 8, 8),))
    net = extract_layers(ep.module())
    rng = np.random.default_rng(seed)
    for lo, hi in ((0.0, 1.0), (-1.0, 2.0)):
        bounds = activation_bounds(net, (lo, hi))
        x = rng.uniform(lo, hi, (300, 2, 8, 8))
        x[:20] = rng.choice([lo, hi], (20, 2, 8, 8))      # corners
        acts = net.activations(x)
        for name, (b_lo, b_hi) in bounds.items():
            assert (acts[name] >= b_lo - 1e-9).all() and (acts[name] <= b_hi + 1e-9).all(), name


def test_noise_calibration_is_seeded_and_within_the_bounds():
    """The random-input scales are the percentile of the activations on NOISE_SAMPLES uniform
    inputs (seed 0): the same every time, never above the bounds', with the range's input
    scale."""
    from snnc.compiler.quantize import (NOISE_SAMPLES, calibrate_from_bounds,
                                        calibrate_from_noise)
    rng = np.random.default_rng(3)
    net = FloatNet.from_dense((6,), [("h1", rng.normal(size=(8, 6)), rng.normal(size=8)),
                                     ("h2", rng.normal(size=(5, 8)), np.zeros(5)),
                                     ("out", rng.normal(size=(3, 5)), np.zeros(3))])
    a, b = calibrate_from_noise(net), calibrate_from_noise(net)
    assert a.lambdas == b.lambdas and a.samples == 0
    bound = calibrate_from_bounds(net)
    assert all(0 < x <= y for x, y in zip(a.lambdas, bound.lambdas))
    assert a.input_scale == bound.input_scale == 1 / 255
    x = np.random.default_rng(0).uniform(0.0, 1.0, (NOISE_SAMPLES, 6))
    assert a.lambdas[0] == pytest.approx(np.percentile(net.activations(x)["h1"], 99.9), rel=0,
                                         abs=0)
