"""Conversion: thresholds and biases on a hand-checked network, clamp policy, option checks."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from snnc.compiler.convert import apply_clamps, check_options, clamp_bound, convert
from snnc.compiler.errors import SnncError
from snnc.compiler.floatnet import FloatNet
from snnc.compiler.quantize import Calibration, calibrate
from snnc.ir import input_current_bounds
from snnc.sim.reference import run
from snnc.testing import random_graph

# 2 inputs -> 2 hidden (ReLU) -> 2 outputs. Weights sit on the 4-bit grid (scale 0.1), so they
# quantize exactly: W1 -> [[7, -3], [0, 2]], W2 -> [[5, -7], [-2, 4]].
HAND = FloatNet.from_dense((2,), (
    ("hidden", np.array([[0.7, -0.3], [0.0, 0.2]]), np.array([0.015, -0.01])),
    ("out", np.array([[0.5, -0.7], [-0.2, 0.4]]), np.array([0.12, -0.18])),
))
# Calibration: max |x| = 2.55 -> s_in = 2.55 / 255 = 0.01, unsigned. Hidden activations:
# x0 -> (0.7*2.55 + 0.015, 0) = (1.8, 0); x1 -> (0, 0.2*2.55 - 0.01) = (0, 0.5). Percentile 100
# over all of them: lambda = 1.8.
HAND_X = np.array([[2.55, 0.0], [0.0, 2.55]])


def hand_graph(T=5, S=3):
    cal = calibrate(HAND, HAND_X, percentile=100)
    assert cal.lambdas == (pytest.approx(1.8),) and cal.input_scale == pytest.approx(0.01)
    return convert(HAND, cal, bits=4, timesteps=T, max_strength=S, name="hand")


def test_hand_network_thresholds_and_biases():
    graph, layers = hand_graph()
    hidden, out = graph.populations
    # Hidden: current unit c1 = s_w * s_in = 0.1 * 0.01 = 0.001.
    # theta = round(lambda / S / c1) = round(1.8 / 3 / 0.001) = 600; bias = round(b / c1).
    assert graph.projections[0].weights.tolist() == [[7, -3], [0, 2]]
    assert (hidden.theta, hidden.s_max, hidden.spiking) == (600, 3, True)
    assert hidden.bias.tolist() == [15, -10]
    # One strength unit is u1 = theta * c1 = 0.6 exactly; readout current unit c2 = 0.1 * 0.6.
    # bias = round((0.12, -0.18) / 0.06) = (2, -3).
    assert graph.projections[1].weights.tolist() == [[5, -7], [-2, 4]]
    assert (out.theta, out.s_max, out.spiking) == (1, 1, False)
    assert out.bias.tolist() == [2, -3]
    # Clamps. Hidden: pos = (7*255, 2*255) = (1785, 510), neg = (-3*255, 0) = (-765, 0),
    # P = max(1785 + 15, 510, 765, 0 + 10) = 1800: v in [-1800, max(1800, 600)].
    assert (hidden.v_min, hidden.v_max) == (-1800, 1800)
    # Readout (sources 0..3): pos = (15, 12), neg = (-21, -6), bias (2, -3):
    # P = max(17, 12, 21, 9) = 21, T = 5: v in [-105, 105].
    assert (out.v_min, out.v_max) == (-105, 105)
    assert [layer["theta"] for layer in layers] == [600, 1]
    assert layers[0]["unit"] == pytest.approx(0.6)
    assert layers[0]["lambda"] == pytest.approx(1.8) and layers[1]["lambda"] is None
    assert [layer["nnz"] for layer in layers] == [3, 4]
    assert [layer["density"] for layer in layers] == [0.75, 1.0]


def test_hand_network_runs_like_the_float_network():
    graph, _ = hand_graph()
    # x = (2.55, 0) -> x_int = (255, 0). Hidden currents per step: 7*255 + 15 = 1800 -> strength
    # min(1800 // 600, 3) = 3, remainder 0; neuron 1 only sees its bias -10 (no spike).
    # Readout per step: 5*3 + 2 = 17 and -2*3 - 3 = -9; after T = 5: (85, -45). The float
    # network gives (1.02, -0.54) = (17, -9) * c2 with c2 = 0.06.
    r = run(graph, np.array([[255, 0], [0, 255]]))
    assert r.spikes[0][:, 0].tolist() == [[3, 0]] * 5
    assert r.v_final[1].tolist()[0] == [85, -45]
    # x = (0, 2.55) -> (0, 255): hidden 1 gets 2*255 - 10 = 500 per step, U = 500 (s 0, V 500),
    # 1000 (s 1, V 400), 900 (s 1, V 300), 800 (s 1, V 200), 700 (s 1, V 100); hidden 0 gets
    # -3*255 + 15 = -750 per step: V -750, -1500, then clamped at -1800. Readout over T = 5:
    # (-7*4 + 5*2, 4*4 - 5*3) = (-18, 1).
    assert r.spikes[0][:, 1].tolist() == [[0, 0], [0, 1], [0, 1], [0, 1], [0, 1]]
    assert r.v_final[0].tolist()[1] == [-1800, 100]
    assert r.v_final[1].tolist()[1] == [-18, 1]
    assert r.prediction.tolist() == [0, 1]


def test_rounded_theta_defines_the_next_unit():
    # S = 7: theta = round(1.8 / 7 / 0.001) = round(257.14) = 257, so one strength unit is
    # 0.257 (not lambda / S = 0.25714...) and the readout's bias unit is 0.1 * 0.257.
    graph, layers = hand_graph(S=7)
    assert graph.populations[0].theta == 257
    assert layers[0]["unit"] == pytest.approx(0.257)
    assert layers[1]["current_unit"] == pytest.approx(0.0257)
    assert graph.populations[1].bias.tolist() == [5, -7]   # round(4.67), round(-7.004)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_clamp_policy_on_random_graphs(seed):
    rng = np.random.default_rng(seed)
    graph = apply_clamps(random_graph(rng, max_in=6, max_size=6))
    for k, pop in enumerate(graph.populations, start=1):
        neg, pos = input_current_bounds(graph, k)
        b = pop.bias
        P = max(max(int(p + max(bj, 0)), int(-(n + min(bj, 0)))) for n, p, bj in zip(neg, pos, b))
        P = max(P, 1)
        assert clamp_bound(graph, k) == P
        if pop.spiking:
            assert (pop.v_min, pop.v_max) == (-P, max(P, pop.theta))
        else:
            assert (pop.v_min, pop.v_max) == (-graph.timesteps * P, graph.timesteps * P)
    # The readout never clamps within T: its final membrane is the exact sum of its inputs.
    lo, hi = graph.input.value_range
    x = rng.integers(lo, hi + 1, size=(8, graph.input.size))
    r = run(graph, x)
    last = len(graph.populations)
    total = np.zeros_like(r.v_final[-1])
    for proj in graph.incoming(last):
        src = (np.broadcast_to(x, (graph.timesteps, *x.shape)) if proj.src == 0
               else r.spikes[proj.src - 1])
        total += (src @ proj.weights.T).sum(axis=0)
    total += graph.timesteps * graph.populations[-1].bias
    assert np.array_equal(r.v_final[-1], total)


@pytest.mark.parametrize("kwargs, match", [
    ({"bits": 3}, "--bits must be 8, 4 or 2, not 3"),
    ({"bits": 16}, "--bits must be 8, 4 or 2, not 16"),
    ({"timesteps": 0}, "--timesteps must be an integer in 1..4096, not 0"),
    ({"timesteps": 4097}, "--timesteps must be an integer in 1..4096, not 4097"),
    ({"max_strength": 0}, "--max-strength must be an integer in 1..15 .*4 bits.*not 0"),
    ({"max_strength": 16}, "--max-strength must be an integer in 1..15"),
    ({"percentile": 0.0}, r"--percentile must be in \(0, 100\], not 0.0"),
    ({"percentile": 101.0}, r"--percentile must be in \(0, 100\]"),
])
def test_bad_options(kwargs, match):
    opts = {"bits": 4, "timesteps": 4, "max_strength": 3, "percentile": 99.9, **kwargs}
    with pytest.raises(SnncError, match=match):
        check_options(**opts)


def test_convert_checks_calibration_length():
    cal = Calibration(lambdas=(1.0, 2.0), input_scale=0.01, input_signed=False, samples=1)
    with pytest.raises(SnncError, match="2 activation scales for 1 spiking layers"):
        convert(HAND, cal, bits=4, timesteps=4, max_strength=3)


# Mixed precision (--bits-override) -------------------------------------------------------------

def test_parse_bits_override():
    from snnc.compiler.convert import parse_bits_override
    assert parse_bits_override("conv1=8, fc=2") == (("conv1", 8), ("fc", 2))
    assert parse_bits_override(None) == () and parse_bits_override({"a": 4}) == (("a", 4),)
    for bad, match in (("conv1", "LAYER=BITS"), ("=8", "LAYER=BITS"), ("a=3", "8, 4 or 2"),
                       ("a=8,a=4", "given twice")):
        with pytest.raises(SnncError, match=match):
            parse_bits_override(bad)


def test_bits_override_gives_a_layer_its_own_width():
    """A 2-layer MLP at 2 bits with the readout at 8: each projection has its layer's width, and
    the metadata says so; a name the network does not have is refused with its layer names."""
    from snnc.compiler.convert import convert
    from snnc.compiler.floatnet import FloatNet
    from snnc.compiler.quantize import Calibration
    rng = np.random.default_rng(0)
    net = FloatNet.from_dense((6,), [("h", rng.normal(size=(5, 6)), np.zeros(5)),
                                     ("out", rng.normal(size=(3, 5)), np.zeros(3))])
    cal = Calibration((2.0,), 1 / 255, False, 10)
    g, layers = convert(net, cal, bits=2, timesteps=2, max_strength=3, bits_override="out=8")
    assert [p.bits for p in g.projections] == [2, 8]
    assert [layer["bits"] for layer in layers] == [2, 8]
    assert np.abs(g.projections[1].weights).max() > 1          # 8-bit values, not ternary
    with pytest.raises(SnncError, match="does not have; its layers with weights are: h, out"):
        convert(net, cal, bits=2, timesteps=2, max_strength=3, bits_override="fc=8")


def test_a_source_feeding_two_widths_is_refused_with_the_fix():
    """The input feeds 'h' and, as a shortcut, 'out': different widths cannot share the input's
    outgoing region; the error names both layers and an override that works."""
    from snnc.compiler.convert import convert
    from snnc.compiler.floatnet import INPUT, FloatNet, Layer, Term
    from snnc.compiler.quantize import Calibration
    rng = np.random.default_rng(1)
    net = FloatNet((4,), (Layer("h", (4,), (Term(INPUT, rng.normal(size=(4, 4))),), np.zeros(4)),
                          Layer("out", (2,), (Term("h", rng.normal(size=(2, 4))),
                                              Term(INPUT, rng.normal(size=(2, 4)))),
                                np.zeros(2), relu=False)))
    cal = Calibration((2.0,), 1 / 255, False, 10)
    with pytest.raises(SnncError, match=r"layer 'input' feeds layers with different weight widths "
                                        r"\('h' at 4, 'out' at 8 bits\).*--bits-override h=8,out=8"):
        convert(net, cal, bits=4, timesteps=2, max_strength=3, bits_override="out=8")


# Bias correction ---------------------------------------------------------------------------

def test_bias_correction_removes_the_mean_quantization_error():
    """With --bias-correct the first layer's mean pre-activation over the calibration data, in
    float units, equals the float network's to within half a current unit (the bias's
    rounding); without it the 2-bit error is larger. It needs calibration data."""
    from snnc.compiler.convert import convert
    from snnc.compiler.floatnet import FloatNet
    from snnc.compiler.quantize import calibrate, calibrate_from_noise
    rng = np.random.default_rng(5)
    w = rng.normal(size=(6, 10)) + 0.3
    net = FloatNet.from_dense((10,), [("h", w, rng.normal(size=6)),
                                      ("out", rng.normal(size=(3, 6)), np.zeros(3))])
    x = rng.random((200, 10))
    cal = calibrate(net, x)
    assert np.allclose(cal.means["input"], x.mean(axis=0))
    errs = {}
    for bc in (False, True):
        g, layers = convert(net, cal, bits=2, timesteps=2, max_strength=3, bias_correct=bc)
        c = layers[0]["current_unit"]
        w_hat = g.projections[0].weights * c / cal.input_scale
        got = (x @ w_hat.T).mean(axis=0) + g.populations[0].bias * c
        want = (x @ w.T).mean(axis=0) + net.node("h").bias
        errs[bc] = np.abs(got - want)
        if bc:
            assert (errs[bc] <= c / 2 + 1e-9).all()
    assert errs[True].max() < errs[False].max()
    with pytest.raises(SnncError, match="--bias-correct needs calibration data"):
        convert(net, calibrate_from_noise(net), bits=2, timesteps=2, max_strength=3,
                bias_correct=True)
