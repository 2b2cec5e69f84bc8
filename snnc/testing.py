"""Seeded random networks and inputs for regressions (used by tests, ``snnc verify`` and benchmarks)."""

from __future__ import annotations

import numpy as np

from .ir import (Conv, Dense, Graph, InputPopulation, MaxPool, Population, Readout,
                 conv_output_shape, verify, weight_limit)
from .ir.verify import input_current_bounds

__all__ = ["random_graph", "random_conv_graph", "random_inputs", "with_random_clamps",
           "draw_fitting"]


def draw_fitting(rng: np.random.Generator, make, params, *, tries: int = 200) -> Graph:
    """Draw ``make(rng)`` until the graph fits a core built with ``params``.

    Random conv graphs (padding, residual blocks) can outgrow a fixed test core; redrawing from
    the same generator keeps the choice a pure function of the seed. Raises after ``tries``.
    """
    from .hw.mapping import MappingError, check_fits, map_graph
    last = None
    for _ in range(tries):
        g = make(rng)
        try:
            check_fits(map_graph(g, lanes=params.lanes, bank_skew=params.bank_skew), params,
                       g.timesteps)
            return g
        except MappingError as e:
            last = e
    raise RuntimeError(f"no random graph out of {tries} fits the core: {last}")


def random_graph(rng: np.random.Generator, *, max_in: int = 12, max_size: int = 12,
                 max_hidden: int = 2, max_strength: int = 15, bits=None, timesteps=None,
                 residual: bool = False, readout: Readout = Readout.MEMBRANE) -> Graph:
    """A random valid graph: 1..``max_hidden``+1 weight layers, any bits, thresholds and clamps.

    Covers negative weights and biases, power-of-two and other thresholds, binary and graded
    spikes, sparse and empty fan-outs, and clamp bounds that are actually reached.
    """
    n_in = int(rng.integers(1, max_in + 1))
    signed = bool(rng.random() < 0.4)
    n_hidden = int(rng.integers(1 if residual and max_hidden else 0, max_hidden + 1))
    sizes = [n_in] + [int(rng.integers(1, max_size + 1)) for _ in range(n_hidden)] + \
        [int(rng.integers(1, max(2, max_size // 2) + 1))]
    b = int(rng.choice([8, 4, 2])) if bits is None else bits
    lim = weight_limit(b)
    T = int(rng.integers(1, 6)) if timesteps is None else timesteps
    projections = []
    for k in range(1, len(sizes)):
        density = float(rng.choice([0.0, 0.2, 0.6, 1.0])) if rng.random() < 0.9 else 0.0
        w = rng.integers(-lim, lim + 1, size=(sizes[k], sizes[k - 1]))
        w = w * (rng.random(w.shape) < density)
        projections.append(Dense(src=k - 1, dst=k, weights=w, bits=b))
        if residual and k >= 2 and (k == len(sizes) - 1 or rng.random() < 0.5):
            w2 = rng.integers(-lim, lim + 1, size=(sizes[k], sizes[k - 2])) * (rng.random((sizes[k], sizes[k - 2])) < 0.5)
            projections.append(Dense(src=k - 2, dst=k, weights=w2, bits=b))
    projections.sort(key=lambda p: (p.dst, p.src))
    pops = []
    for k in range(1, len(sizes)):
        last = k == len(sizes) - 1
        theta = int(rng.choice([1, 2, 4, 16, 64, 3, 5, 7, 13, int(rng.integers(1, 400))]))
        s_max = int(rng.integers(1, max_strength + 1)) if rng.random() < 0.7 else 1
        bias = rng.integers(-2 * theta, 2 * theta + 1, size=sizes[k]) * (rng.random(sizes[k]) < 0.5)
        pops.append(Population(name=f"l{k}", size=sizes[k], bias=bias, theta=theta, s_max=s_max,
                               v_min=0, v_max=theta,
                               spiking=not last or readout is Readout.SPIKE_COUNT))
    g = Graph(input=InputPopulation("in", (n_in,), signed), populations=tuple(pops),
              projections=tuple(projections), timesteps=T, readout=readout, name="random")
    return with_random_clamps(rng, g)


def with_random_clamps(rng: np.random.Generator, g: Graph) -> Graph:
    """Replace every neuron population's clamps: sometimes tight (so clamping happens), sometimes loose."""
    new = []
    for k, pop in enumerate(g.populations, start=1):
        if pop.maxpool:
            new.append(pop)
            continue
        neg, pos = input_current_bounds(g, k)
        P = int(max(pos.max(initial=0), -neg.min(initial=0), 1))
        scale = float(rng.choice([0.1, 0.5, 1.0, 3.0]))
        v_max = max(pop.theta, int(P * scale))
        v_min = -int(P * float(rng.choice([0.0, 0.1, 0.5, 1.0, 3.0])))
        new.append(Population(name=pop.name, size=pop.size, bias=pop.bias, theta=pop.theta,
                              s_max=pop.s_max, v_min=v_min, v_max=v_max, spiking=pop.spiking,
                              shape=pop.shape))
    return verify(g.replace(populations=tuple(new)))


def _neurons(rng, name, shape, *, spiking=True, s_max=None, max_strength=15):
    size = int(np.prod(shape))
    theta = int(rng.choice([1, 2, 4, 16, 64, 3, 5, 7, 13, int(rng.integers(1, 400))]))
    if s_max is None:
        s_max = int(rng.integers(1, max_strength + 1)) if rng.random() < 0.7 else 1
    bias = rng.integers(-2 * theta, 2 * theta + 1, size=size) * (rng.random(size) < 0.5)
    return Population(name=name, size=size, bias=bias, theta=theta, s_max=s_max, v_min=0,
                      v_max=theta, spiking=spiking, shape=shape)


def _kernel(rng, co, ci, kh, kw, bits, density):
    lim = weight_limit(bits)
    w = rng.integers(-lim, lim + 1, size=(co, ci, kh, kw))
    return w * (rng.random(w.shape) < density)


def random_conv_graph(rng: np.random.Generator, *, bits=None, max_strength: int = 15,
                      timesteps=None, max_hw: int = 7) -> Graph:
    """A random valid convolutional graph: conv layers (kernels 1..5, strides 1..3, any padding),
    spiking max-pool, a residual block (identity 1x1 projection), a dense readout."""
    b = int(rng.choice([8, 4, 2])) if bits is None else bits
    T = int(rng.integers(1, 4)) if timesteps is None else timesteps
    shape = (int(rng.integers(1, 3)), int(rng.integers(3, max_hw + 1)), int(rng.integers(3, max_hw + 1)))
    inp = InputPopulation("in", shape, bool(rng.random() < 0.4))
    pops, projs = [], []
    cur = 0

    def add_conv(src, src_shape, co, k, stride, pad, density):
        out = conv_output_shape(src_shape, co, (k, k), (stride, stride), (pad, pad))
        if min(out) < 1:
            return None
        w = _kernel(rng, co, src_shape[0], k, k, b, density)
        return Conv(src, len(pops) + 1, w, b, (stride, stride), (pad, pad)), out

    n_conv = int(rng.integers(1, 3))
    for i in range(n_conv):
        src_shape = inp.shape if cur == 0 else pops[cur - 1].shape
        k = int(rng.integers(1, min(5, min(src_shape[1:])) + 1))
        stride = int(rng.choice([1, 1, 2, 3]))
        pad = int(rng.integers(0, k))
        made = add_conv(cur, src_shape, int(rng.integers(1, 4)), k, stride, pad,
                        float(rng.choice([0.3, 0.7, 1.0])))
        if made is None:
            continue
        proj, out = made
        pops.append(_neurons(rng, f"conv{i}", out, max_strength=max_strength))
        projs.append(proj)
        cur = len(pops)
        if rng.random() < 0.4 and min(out[1:]) >= 2:       # spiking max-pool
            k = int(rng.integers(2, min(3, min(out[1:])) + 1))
            src = pops[cur - 1]
            pooled = (out[0], out[1] // k, out[2] // k)
            pops.append(Population(f"pool{i}", int(np.prod(pooled)), np.zeros(int(np.prod(pooled)), np.int64),
                                   1, src.s_max, 0, 0, True, pooled, maxpool=True))
            projs.append(MaxPool(cur, len(pops), k))
            cur = len(pops)
    if rng.random() < 0.5:                                   # residual block: x -> h -> (h' + x)
        x_shape = inp.shape if cur == 0 else pops[cur - 1].shape
        k = int(rng.choice([1, 3]))
        proj, out = add_conv(cur, x_shape, x_shape[0], k, 1, k // 2, 0.7)
        pops.append(_neurons(rng, "res_a", out, max_strength=max_strength))
        projs.append(proj)
        h = len(pops)
        proj2, out2 = add_conv(h, out, x_shape[0], k, 1, k // 2, 0.7)
        pops.append(_neurons(rng, "res_sum", out2, max_strength=max_strength))
        projs.append(proj2)
        lim = weight_limit(b)
        ident = np.zeros((x_shape[0], x_shape[0], 1, 1), dtype=np.int64)
        ident[np.arange(x_shape[0]), np.arange(x_shape[0])] = int(rng.integers(1, lim + 1))
        projs.append(Conv(cur, len(pops), ident, b))
        cur = len(pops)
    src_size = inp.size if cur == 0 else pops[cur - 1].size
    n_out = int(rng.integers(1, 5))
    lim = weight_limit(b)
    w = rng.integers(-lim, lim + 1, size=(n_out, src_size)) * (rng.random((n_out, src_size)) < 0.6)
    pops.append(_neurons(rng, "readout", (n_out,), spiking=False, s_max=1))
    projs.append(Dense(cur, len(pops), w, b))
    projs.sort(key=lambda p: (p.dst, p.src))
    g = Graph(input=inp, populations=tuple(pops), projections=tuple(projs), timesteps=T,
              readout=Readout.MEMBRANE, name="random-conv")
    return with_random_clamps(rng, g)


def random_inputs(rng: np.random.Generator, graph: Graph, n: int, *, empty_prob: float = 0.15,
                  density: float | None = None) -> np.ndarray:
    """``n`` random integer input vectors in the network's input range, some all-zero."""
    lo, hi = graph.input.value_range
    size = graph.input.size
    x = rng.integers(lo, hi + 1, size=(n, size))
    d = rng.random((n, 1)) if density is None else density
    x = x * (rng.random((n, size)) < d)
    x[rng.random(n) < empty_prob] = 0
    return x.astype(np.int64)


def reseal_bundle(root) -> None:
    """Make a bundle's manifest match its files again after a test changed them on purpose
    (to test what lies past the integrity check, e.g. that verify runs the images it finds)."""
    import json
    from pathlib import Path

    from .compiler.bundle import _manifest_digest, file_digest

    root = Path(root)
    m = json.loads((root / "manifest.json").read_text())
    m["files"] = {n: {"bytes": (root / n).stat().st_size, "sha256": file_digest(root / n)}
                  for n in m["files"]}
    m["manifest_sha256"] = _manifest_digest(m)
    (root / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")
