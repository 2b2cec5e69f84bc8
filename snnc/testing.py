"""Seeded random networks and inputs for regressions (used by tests, ``snnc verify`` and benchmarks)."""

from __future__ import annotations

import numpy as np

from .ir import Dense, Graph, InputPopulation, Population, Readout, verify, weight_limit
from .ir.verify import input_current_bounds

__all__ = ["random_graph", "random_inputs"]


def random_graph(rng: np.random.Generator, *, max_in: int = 12, max_size: int = 12,
                 max_hidden: int = 2, max_strength: int = 15, bits=None, timesteps=None,
                 residual: bool = False) -> Graph:
    """A random valid graph: 1..``max_hidden``+1 weight layers, any bits, thresholds and clamps.

    Covers negative weights and biases, power-of-two and other thresholds, binary and graded
    spikes, sparse and empty fan-outs, and clamp bounds that are actually reached.
    """
    n_in = int(rng.integers(1, max_in + 1))
    signed = bool(rng.random() < 0.4)
    n_hidden = int(rng.integers(0, max_hidden + 1))
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
        if residual and k >= 2 and rng.random() < 0.5:
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
                               v_min=0, v_max=theta, spiking=not last))
    g = Graph(input=InputPopulation("in", (n_in,), signed), populations=tuple(pops),
              projections=tuple(projections), timesteps=T, readout=Readout.MEMBRANE, name="random")
    # Clamp bounds: sometimes tight (so clamping happens), sometimes loose.
    new = []
    for k, pop in enumerate(g.populations, start=1):
        neg, pos = input_current_bounds(g, k)
        P = int(max(pos.max(initial=0), -neg.min(initial=0), 1))
        scale = float(rng.choice([0.1, 0.5, 1.0, 3.0]))
        v_max = max(pop.theta, int(P * scale))
        v_min = -int(P * float(rng.choice([0.0, 0.1, 0.5, 1.0, 3.0])))
        new.append(Population(name=pop.name, size=pop.size, bias=pop.bias, theta=pop.theta,
                              s_max=pop.s_max, v_min=v_min, v_max=v_max, spiking=pop.spiking))
    return verify(g.replace(populations=tuple(new)))


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
