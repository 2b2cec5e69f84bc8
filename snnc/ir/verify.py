"""Verifier and worst-case bounds for :class:`snnc.ir.Graph`.

Every compiler pass's output must satisfy :func:`verify`. The bounds functions give the exact
worst-case range of every intermediate value of the numeric contract, from which the compiler
sizes the membrane state width (``docs/architecture.md``, "State width").
"""

from __future__ import annotations

import numpy as np

from .graph import (WEIGHT_BITS, STRENGTH_LIMIT, Graph, Dense, Readout, weight_limit)

__all__ = ["VerifyError", "verify", "source_range", "input_current_bounds", "state_range",
           "signed_bits", "required_state_bits"]


class VerifyError(ValueError):
    """The graph breaks an invariant of the IR."""


def signed_bits(lo: int, hi: int) -> int:
    """Smallest width ``w`` such that ``[lo, hi]`` fits in a ``w``-bit two's complement value."""
    w = 1
    while not (-(1 << (w - 1)) <= lo and hi <= (1 << (w - 1)) - 1):
        w += 1
    return w


def source_range(graph: Graph, index: int) -> tuple[int, int]:
    """Range of the event strength a source of population ``index`` can send in one timestep."""
    if index == 0:
        return graph.input.value_range
    return 0, graph.pop(index).s_max


def input_current_bounds(graph: Graph, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-neuron bounds ``(neg, pos)`` of one timestep's synaptic input to population ``index``.

    ``neg[j]`` is the sum of all negative contributions neuron ``j`` can receive in one timestep
    and ``pos[j]`` the sum of all positive ones, so every partial sum of the timestep's events,
    in any order, lies in ``[neg[j], pos[j]]``.
    """
    n = graph.size(index)
    neg = np.zeros(n, dtype=np.int64)
    pos = np.zeros(n, dtype=np.int64)
    for proj in graph.incoming(index):
        lo, hi = source_range(graph, proj.src)
        w = proj.weights
        a, b = w * lo, w * hi
        pos += np.maximum(np.maximum(a, b), 0).sum(axis=1)
        neg += np.minimum(np.minimum(a, b), 0).sum(axis=1)
    return neg, pos


def state_range(graph: Graph, index: int) -> tuple[int, int]:
    """Range of every value population ``index``'s membrane state can take (exact bounds)."""
    pop = graph.pop(index)
    neg, pos = input_current_bounds(graph, index)
    bias = pop.bias
    lo = min(pop.v_min + int((neg + np.minimum(bias, 0)).min(initial=0)), int(bias.min(initial=0)))
    hi = max(pop.v_max + int((pos + np.maximum(bias, 0)).max(initial=0)), int(bias.max(initial=0)))
    # The strength search compares against multiples of theta up to s_max * theta.
    if pop.spiking:
        hi = max(hi, pop.s_max * pop.theta)
    return lo, hi


def required_state_bits(graph: Graph) -> int:
    """Signed membrane width the core needs so that no intermediate value wraps."""
    return max(signed_bits(*state_range(graph, k)) for k in range(1, graph.n_pops))


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise VerifyError(msg)


def verify(graph: Graph) -> Graph:
    """Check every IR invariant; return ``graph`` unchanged or raise :class:`VerifyError`."""
    _check(isinstance(graph, Graph), f"expected a Graph, got {type(graph).__name__}")
    _check(graph.input.size >= 1, "the input population is empty")
    _check(len(graph.populations) >= 1, "the graph has no neuron population")
    _check(isinstance(graph.timesteps, int) and graph.timesteps >= 1,
           f"timesteps must be a positive integer, not {graph.timesteps!r}")
    _check(isinstance(graph.readout, Readout), f"unknown readout {graph.readout!r}")
    names = [graph.input.name] + [p.name for p in graph.populations]
    _check(len(set(names)) == len(names), f"population names are not unique: {names}")
    for k, pop in enumerate(graph.populations, start=1):
        where = f"population {k} ('{pop.name}')"
        _check(pop.size >= 1, f"{where} is empty")
        _check(pop.bias.shape == (pop.size,), f"{where}: bias shape {pop.bias.shape} != ({pop.size},)")
        _check(pop.theta >= 1, f"{where}: theta must be >= 1, not {pop.theta}")
        _check(1 <= pop.s_max <= STRENGTH_LIMIT,
               f"{where}: s_max must be in 1..{STRENGTH_LIMIT}, not {pop.s_max}")
        _check(pop.v_min <= 0 <= pop.v_max, f"{where}: need v_min <= 0 <= v_max, "
               f"got v_min={pop.v_min} v_max={pop.v_max}")
        last = k == graph.n_pops - 1
        if graph.readout is Readout.MEMBRANE:
            _check(pop.spiking != last, f"{where}: with membrane readout exactly the last "
                   "population is non-spiking")
        else:
            _check(pop.spiking, f"{where}: spike-count readout needs every population spiking")
        _check(len(graph.incoming(k)) >= 1, f"{where} has no incoming projection")
    seen = set()
    for proj in graph.projections:
        where = f"projection {proj.src}->{proj.dst}"
        _check(isinstance(proj, Dense), f"{where}: unsupported projection {type(proj).__name__}")
        _check(0 <= proj.src < proj.dst < graph.n_pops,
               f"{where}: projections must go forward between existing populations")
        _check((proj.src, proj.dst) not in seen, f"{where} appears twice")
        seen.add((proj.src, proj.dst))
        _check(proj.src == 0 or graph.pop(proj.src).spiking,
               f"{where}: the source population does not spike")
        _check(proj.bits in WEIGHT_BITS, f"{where}: bits must be one of {WEIGHT_BITS}, not {proj.bits}")
        shape = (graph.size(proj.dst), graph.size(proj.src))
        _check(proj.weights.shape == shape, f"{where}: weights shape {proj.weights.shape} != {shape}")
        lim = weight_limit(proj.bits)
        _check(int(np.abs(proj.weights).max(initial=0)) <= lim,
               f"{where}: weights exceed the {proj.bits}-bit range [-{lim}, {lim}]")
    return graph
