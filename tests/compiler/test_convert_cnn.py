"""Conversion of convolutional networks: exact average pools, spiking max pools, residual
inputs with one current unit, per-layer strengths, and the core's addressing rules."""

import numpy as np
import pytest

from snnc.compiler.convert import StrengthSpec, convert, parse_max_strength
from snnc.compiler.errors import SnncError
from snnc.compiler.floatnet import INPUT, FloatNet, Layer, Pool, Term
from snnc.compiler.quantize import calibrate, round_half_away
from snnc.ir import Conv, Dense, MaxPool, weight_limit
from snnc.sim.reference import run


def conv_layer(rng, name, src, c_in, c_out, shape, k=3, relu=True):
    w = rng.normal(0, 0.4, (c_out, c_in, k, k))
    return Layer(name, (c_out, *shape), (Term(src, w, (1, 1), (k // 2, k // 2)),),
                 np.repeat(rng.normal(0, 0.05, c_out), shape[0] * shape[1]), relu=relu)


def readout(rng, name, src, n_in, n_out=3):
    return Layer(name, (n_out,), (Term(src, rng.normal(0, 0.3, (n_out, n_in))),),
                 rng.normal(0, 0.05, n_out), relu=False)


def compiled(net, bits=8, T=6, S=3, seed=0, n=64):
    rng = np.random.default_rng(seed)
    x = rng.random((n, *net.input_shape))
    cal = calibrate(net, x, percentile=99.9)
    graph, meta = convert(net, cal, bits=bits, timesteps=T, max_strength=S)
    x_int = np.clip(round_half_away(x.reshape(n, -1) / cal.input_scale), 0, 255).astype(np.int64)
    return graph, meta, cal, x_int


def pooled_net(kind, k, hw=(6, 7), seed=0):
    rng = np.random.default_rng(seed)
    conv = conv_layer(rng, "c", INPUT, 1, 2, hw)
    pool = Pool("p", (2, hw[0] // k, hw[1] // k), "c", kind, (k, k))
    return FloatNet((1, *hw), (conv, pool, readout(rng, "fc", "p", pool.size)))


@pytest.mark.parametrize("k, hw", [(2, (6, 7)), (3, (6, 6)), (3, (7, 8))])
def test_average_pool_is_the_exact_floor_of_the_window_mean(k, hw):
    graph, meta, _, x = compiled(pooled_net("avg", k, hw), S=5, T=7)
    c, p = graph.populations[0], graph.populations[1]
    (proj,) = graph.incoming(2)
    assert isinstance(proj, Conv) and proj.stride == (k, k) and proj.padding == (0, 0)
    ones = np.zeros((2, 2, k, k), dtype=np.int64)
    ones[0, 0], ones[1, 1] = 1, 1
    assert np.array_equal(proj.weights, ones)
    assert (p.theta, p.s_max, p.bias.any(), p.maxpool) == (k * k, c.s_max, False, False)
    assert meta[1]["kind"] == "avgpool" and meta[1]["unit"] == meta[0]["unit"]
    r = run(graph, x)
    # Over every prefix of timesteps, the pool's total strength is the floor of the window's
    # total divided by k*k: the remainder is carried, nothing is lost or clamped.
    src = r.spikes[0].reshape(7, len(x), 2, *hw).cumsum(axis=0)
    ho, wo = hw[0] // k, hw[1] // k
    windows = src[..., :ho * k, :wo * k].reshape(7, len(x), 2, ho, k, wo, k).sum(axis=(4, 6))
    got = r.spikes[1].reshape(7, len(x), 2, ho, wo).cumsum(axis=0)
    assert np.array_equal(got, windows // (k * k))
    assert r.spikes[0].max() == 5 and r.spikes[1].max() >= 1       # the case is not vacuous


def test_max_pool_conversion():
    graph, meta, _, x = compiled(pooled_net("max", 2), S="3,c=6")
    c, p, fc = graph.populations
    assert [type(q) for q in graph.projections] == [Conv, MaxPool, Dense]
    assert graph.projections[1].kernel == 2
    assert (p.maxpool, p.s_max, p.theta, p.v_min, p.v_max, p.shape) == (True, 6, 1, 0, 0, (2, 3, 3))
    assert not p.bias.any()
    assert c.s_max == 6 and meta[1]["kind"] == "maxpool" and meta[1]["unit"] == meta[0]["unit"]
    r = run(graph, x)
    assert r.spikes[1].max() >= 1


def residual_net(seed=0, shortcut_scale=1.0):
    rng = np.random.default_rng(seed)
    a = conv_layer(rng, "a", INPUT, 1, 3, (4, 4))
    h = conv_layer(rng, "h", "a", 3, 3, (4, 4))
    w = rng.normal(0, 0.4, (3, 3, 3, 3))
    ident = Term("a", np.eye(3).reshape(3, 3, 1, 1) * shortcut_scale, identity=True)
    s = Layer("s", (3, 4, 4), (Term("h", w, (1, 1), (1, 1)), ident), np.zeros(48))
    return FloatNet((1, 4, 4), (a, h, s, readout(rng, "fc", "s", 48)))


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("shortcut_scale", [1.0, 0.01, 50.0])
def test_residual_inputs_share_one_current_unit(bits, shortcut_scale):
    net = residual_net(shortcut_scale=shortcut_scale)
    graph, meta, _, x = compiled(net, bits=bits)
    q = weight_limit(bits)
    into = {graph.pop(p.src).name: p for p in graph.incoming(3)}
    assert set(into) == {"h", "a"} and all(isinstance(p, Conv) for p in into.values())
    c = meta[2]["current_unit"]
    u = {m["name"]: m["unit"] for m in meta}
    # The identity: a 1x1 diagonal kernel, weight round(scale * u_a / c), at least 1, in range.
    ident = into["a"].weights
    want = int(np.clip(max(1, round_half_away(shortcut_scale * u["a"] / c)), 1, q))
    assert ident.shape == (3, 3, 1, 1)
    assert np.array_equal(ident[:, :, 0, 0], np.eye(3, dtype=np.int64) * want)
    # The main path: round(W * u_h / c), clipped to the range, in the same unit c.
    w = net.node("s").terms[0].weight
    assert np.array_equal(into["h"].weights, np.clip(round_half_away(w * u["h"] / c), -q, q))
    assert int(np.abs(into["h"].weights).max()) <= q
    pop = graph.populations[2]
    assert pop.theta == max(1, int(round_half_away(meta[2]["lambda"] / 3 / c)))
    assert meta[2]["unit"] == pytest.approx(pop.theta * c)
    assert [i["kind"] for i in meta[2]["inputs"]] == ["conv", "identity"]
    run(graph, x)


def test_tiny_cnn_agrees_with_the_float_network_at_8_bits():
    rng = np.random.default_rng(3)
    net = FloatNet((1, 5, 5), (conv_layer(rng, "c", INPUT, 1, 3, (5, 5)),
                               readout(rng, "fc", "c", 75, 4)))
    graph, meta, cal, x = compiled(net, bits=8, T=32, S=15, n=200)
    want = net.forward(x * cal.input_scale).argmax(axis=1)
    assert np.mean(run(graph, x).prediction == want) >= 0.95


@pytest.mark.parametrize("text, spec", [
    (7, StrengthSpec(7)),
    ("7", StrengthSpec(7)),
    ("7,conv1=3,fc1=15", StrengthSpec(7, (("conv1", 3), ("fc1", 15)))),
    (" conv1 = 3 , 5", StrengthSpec(5, (("conv1", 3),))),
    ("conv1=3", StrengthSpec(15, (("conv1", 3),))),
])
def test_max_strength_syntax(text, spec):
    assert parse_max_strength(text) == spec
    assert parse_max_strength(str(spec)) == spec


@pytest.mark.parametrize("text, match", [
    ("16", r"--max-strength must be an integer in 1..15 \(the core's spike strength is 4 bits "
           r"wide\), not 16"),
    ("0", "--max-strength must be an integer in 1..15"),
    ("x", "--max-strength must be an integer in 1..15 .*not x"),
    ("7,8", "two values for all layers"),
    ("7,=3", "'=3' has no layer name"),
    ("a=3,a=4", "layer 'a' is given twice"),
    ("7,a=16", "--max-strength for layer 'a' must be an integer in 1..15"),
    ("7,a=", "--max-strength for layer 'a' must be an integer"),
    (2.5, "--max-strength must be an integer in 1..15"),
])
def test_max_strength_errors(text, match):
    with pytest.raises(SnncError, match=match):
        parse_max_strength(text)


def test_per_layer_strengths_and_their_errors():
    net = residual_net()
    graph, meta, _, _ = compiled(net, S="4,h=2,s=9")
    assert [p.s_max for p in graph.populations] == [4, 2, 9, 1]
    assert meta[0]["s_max"] == 4
    for spec, match in [("4,x=2", r"names layer 'x', which the network does not have; its spiking "
                                  r"layers are: a, h, s"),
                        ("4,fc=2", "sets 'fc', the readout, which does not spike")]:
        with pytest.raises(SnncError, match=match):
            compiled(net, S=spec)
    with pytest.raises(SnncError, match="sets 'p', a max pool: it passes on the spikes of 'c'"):
        compiled(pooled_net("max", 2), S="4,p=2")


def test_core_rules_name_the_layers():
    rng = np.random.default_rng(0)
    conv = conv_layer(rng, "c", INPUT, 1, 2, (4, 4))
    pool = Pool("p", (2, 2, 2), "c", "max", (2, 2))
    two = Layer("fc", (3,), (Term("p", rng.normal(size=(3, 8))), Term("c", rng.normal(size=(3, 32)))),
                np.zeros(3), relu=False)
    with pytest.raises(SnncError, match=r"layer 'c' feeds the max pool 'p' and also 'fc': on the "
                                        "core a max pool's source feeds nothing else"):
        compiled(FloatNet((1, 4, 4), (conv, pool, two)))
    h = conv_layer(rng, "h", "c", 2, 2, (4, 4))
    mixed = Layer("fc", (3,), (Term("h", rng.normal(size=(3, 32))), Term("c", rng.normal(size=(3, 32)))),
                  np.zeros(3), relu=False)
    with pytest.raises(SnncError, match=r"layer 'c' feeds convolutions \('h'\) and fully "
                                        r"connected layers \('fc'\)"):
        compiled(FloatNet((1, 4, 4), (conv, h, mixed)))
