"""Choose the membrane-bank function of a core with synapse lanes (a pure compiler pass).

A core with ``lanes`` > 1 keeps its membranes in ``lanes`` banks; the entries of one issue whose
targets share a bank take a cycle each (docs/architecture.md, "Synapse lanes"). With the bank
``n % lanes``, convolution targets that differ by a multiple of ``lanes`` (other output
channels of one tap, other rows of a map whose width is a multiple of ``lanes``) all share a
bank. ``CoreParams.bank_skew = k`` adds ``n >> k`` to the bank, which spreads them.

:func:`choose_bank_skew` maps the network with every candidate ``k`` and keeps the one with the
fewest conflict stalls over all sources, each source counted once (the stalls of a source do
not depend on the input, only how often it fires does): 0 when nothing beats it.
"""

from __future__ import annotations

import numpy as np

from ..hw.convlists import DEFAULT_CONV_LISTS
from ..hw.mapping import core_params_for, map_graph
from ..ir import Graph

__all__ = ["choose_bank_skew", "static_stalls"]


def static_stalls(graph: Graph, conv_layout: str, lanes: int, bank_skew: int) -> int:
    """Bank-conflict stall cycles of one event of every source of ``graph`` (each once), on a
    core with ``lanes`` lanes and ``bank_skew``."""
    from ..sim.core import CoreModel
    image = map_graph(graph, conv_layout, lanes, bank_skew)
    model = CoreModel(core_params_for(image, timesteps=graph.timesteps))
    sources = [k for k in range(graph.n_pops) if k == 0 or image.pops[k]["SPIKING"]]
    return int(sum(model._walk_cost(image, k)[1].sum() for k in sources))


def choose_bank_skew(graph: Graph, conv_layout: str = DEFAULT_CONV_LISTS, lanes: int = 1) -> int:
    """The ``bank_skew`` with the fewest :func:`static_stalls` (0 at one lane, and on ties)."""
    if lanes == 1:
        return 0
    lane_bits = lanes.bit_length() - 1
    n_neurons = sum(graph.size(k) for k in range(1, graph.n_pops))
    top = max(lane_bits + 1, int(n_neurons - 1).bit_length())
    best = (static_stalls(graph, conv_layout, lanes, 0), 0)
    for k in range(lane_bits, top):
        best = min(best, (static_stalls(graph, conv_layout, lanes, k), k))
    return best[1]
