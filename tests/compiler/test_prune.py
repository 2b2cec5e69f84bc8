"""Magnitude pruning (snnc.compiler.prune): the fraction met exactly per layer or globally, the
smallest magnitudes go first, existing zeros count and stay, identity shortcuts are kept, and
snnc compile --prune reports what it achieved."""

import numpy as np
import pytest

from snnc.compiler.errors import SnncError
from snnc.compiler.floatnet import FloatNet, Layer, Term
from snnc.compiler.prune import prune


def two_layer_net(rng):
    w1 = rng.normal(size=(8, 10))
    w1[0, :4] = 0.0                                   # 4 zeros already
    w2 = rng.normal(size=(3, 8)) * 10                 # larger weights
    return FloatNet.from_dense((10,), [("fc1", w1, np.zeros(8)), ("fc2", w2, np.zeros(3))])


def weights(net, name):
    return np.concatenate([t.weight.ravel() for t in net.node(name).terms])


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 0.9, 0.99])
def test_per_layer_fraction_is_met_exactly_smallest_first(seed, fraction):
    rng = np.random.default_rng(seed)
    print("seed", seed)
    net = two_layer_net(rng)
    pruned, report = prune(net, fraction, "layer")
    for name in ("fc1", "fc2"):
        w, p = weights(net, name), weights(pruned, name)
        want = max(int(round(fraction * w.size)), int(np.count_nonzero(w == 0)))
        assert np.count_nonzero(p == 0) == want
        assert np.all(p[p != 0] == w[p != 0])                   # survivors unchanged
        if (p == 0).any() and (p != 0).any():
            assert np.abs(w[p == 0]).max() <= np.abs(w[p != 0]).min()
        assert np.all(p[w == 0] == 0)                           # zeros stay
    rows = {n: (tot, b, a) for n, tot, b, a in report.layers}
    assert rows["fc1"][:2] == (80, 4)
    assert rows["fc2"][2] == int(round(fraction * 24))


def test_existing_zeros_count_towards_the_fraction():
    rng = np.random.default_rng(0)
    net = two_layer_net(rng)
    # fc1 has 4 zeros of 80: 5% prunes nothing more there
    pruned, _ = prune(net, 0.05, "layer")
    assert np.array_equal(weights(pruned, "fc1"), weights(net, "fc1"))


def test_global_scope_uses_one_threshold():
    """fc2's weights are 10x larger, so a global 50% takes them last."""
    rng = np.random.default_rng(1)
    net = two_layer_net(rng)
    pruned, report = prune(net, 0.5, "global")
    w1, w2 = weights(pruned, "fc1"), weights(pruned, "fc2")
    assert np.count_nonzero(w1 == 0) + np.count_nonzero(w2 == 0) == 52
    survivors = np.abs(np.concatenate([w1, w2]))
    cut = np.abs(np.concatenate([weights(net, "fc1"), weights(net, "fc2")]))[
        np.concatenate([w1, w2]) == 0]
    assert cut.max() <= survivors[survivors > 0].min()
    assert np.count_nonzero(w2 == 0) < np.count_nonzero(w1 == 0)
    assert report.scope == "global" and report.as_json()["layers"][0]["name"] == "fc1"


def test_identity_shortcuts_are_not_pruned():
    w = np.full((4, 4), 0.01)
    node = Layer("res", (4,), (Term("input", np.eye(4) * 0.001, identity=True), Term("input", w)),
                 np.zeros(4))
    net = FloatNet((4,), (node, Layer("out", (2,), (Term("res", np.ones((2, 4))),), np.zeros(2),
                                      relu=False)))
    pruned, report = prune(net, 0.9, "layer")
    assert np.array_equal(pruned.node("res").terms[0].weight, np.eye(4) * 0.001)
    assert np.count_nonzero(pruned.node("res").terms[1].weight) == 2          # 14 of 16 cut
    assert report.layers[0] == ("res", 16, 0, 14)


def test_bad_options():
    net = two_layer_net(np.random.default_rng(0))
    for bad in (1.0, -0.1, "half"):
        with pytest.raises(SnncError, match="--prune must be a fraction"):
            prune(net, bad)
    with pytest.raises(SnncError, match="--prune-scope"):
        prune(net, 0.5, "row")
