"""Verifier and worst-case bounds for :class:`snnc.ir.Graph`.

Every compiler pass's output must satisfy :func:`verify`. The bounds functions give the exact
worst-case range of every intermediate value of the numeric contract, from which the compiler
sizes the membrane state width (``docs/architecture.md``, "State width").
"""

from __future__ import annotations

import numpy as np

from .graph import (MAX_KERNEL, MAX_TIMESTEPS, STRENGTH_LIMIT, WEIGHT_BITS, Conv, Dense, Graph,
                    MaxPool, Readout, conv_output_shape, weight_limit)

__all__ = ["VerifyError", "verify", "source_range", "input_current_bounds", "state_range",
           "signed_bits", "required_state_bits", "receptive_sum"]


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
        if isinstance(proj, MaxPool):
            continue
        lo, hi = source_range(graph, proj.src)
        w = proj.weights
        a, b = w * lo, w * hi
        up, down = np.maximum(np.maximum(a, b), 0), np.minimum(np.minimum(a, b), 0)
        if isinstance(proj, Conv):
            pos += receptive_sum(up, graph.shape(proj.src), proj.stride, proj.padding)
            neg += receptive_sum(down, graph.shape(proj.src), proj.stride, proj.padding)
        else:
            pos += up.sum(axis=1)
            neg += down.sum(axis=1)
    return neg, pos


def receptive_sum(kernel: np.ndarray, in_shape, stride, padding) -> np.ndarray:
    """Per output neuron, the sum of ``kernel`` over the taps that land inside the input."""
    import torch
    ones = torch.ones((1,) + tuple(in_shape), dtype=torch.float64)
    out = torch.nn.functional.conv2d(ones, torch.from_numpy(kernel.astype(np.float64)),
                                     stride=tuple(stride), padding=tuple(padding))
    return np.rint(out.numpy()).astype(np.int64).reshape(-1)


def state_range(graph: Graph, index: int) -> tuple[int, int]:
    """Range of every value population ``index``'s membrane state can take (exact bounds)."""
    pop = graph.pop(index)
    if pop.maxpool:
        return 0, 0
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


def _verify_conv(graph: Graph, proj: Conv, where: str) -> None:
    src = graph.shape(proj.src)
    _check(len(src) == 3, f"{where}: a convolution needs a (C, H, W) source, not shape {src}")
    co, ci, kh, kw = proj.weights.shape
    _check(ci == src[0], f"{where}: kernel has {ci} input channels, the source has {src[0]}")
    _check(1 <= kh <= MAX_KERNEL and 1 <= kw <= MAX_KERNEL,
           f"{where}: kernel {kh}x{kw} exceeds {MAX_KERNEL}x{MAX_KERNEL}")
    _check(len(proj.stride) == 2 and min(proj.stride) >= 1, f"{where}: bad stride {proj.stride}")
    _check(len(proj.padding) == 2 and min(proj.padding) >= 0 and proj.padding[0] < kh
           and proj.padding[1] < kw, f"{where}: padding {proj.padding} must be in 0..kernel-1")
    want = conv_output_shape(src, co, (kh, kw), proj.stride, proj.padding)
    _check(min(want) >= 1 and graph.shape(proj.dst) == want,
           f"{where}: destination shape {graph.shape(proj.dst)} != convolution output {want}")


def _verify_maxpool(graph: Graph, proj: MaxPool, where: str) -> None:
    src = graph.shape(proj.src)
    k = proj.kernel
    _check(proj.src != 0, f"{where}: max-pool over the input population is not supported")
    _check(len(src) == 3, f"{where}: max-pool needs a (C, H, W) source, not shape {src}")
    _check(isinstance(k, int) and 1 <= k <= MAX_KERNEL, f"{where}: kernel must be 1..{MAX_KERNEL}, not {k}")
    want = (src[0], src[1] // k, src[2] // k)
    dst = graph.pop(proj.dst)
    _check(min(want) >= 1 and graph.shape(proj.dst) == want,
           f"{where}: destination shape {graph.shape(proj.dst)} != pooled shape {want}")
    _check(dst.maxpool, f"{where}: the destination must be a max-pool population")
    _check(dst.s_max == graph.pop(proj.src).s_max,
           f"{where}: a max-pool population passes spikes on: its s_max must equal the source's")


def verify(graph: Graph) -> Graph:
    """Check every IR invariant; return ``graph`` unchanged or raise :class:`VerifyError`."""
    _check(isinstance(graph, Graph), f"expected a Graph, got {type(graph).__name__}")
    _check(graph.input.size >= 1, "the input population is empty")
    _check(len(graph.populations) >= 1, "the graph has no neuron population")
    _check(isinstance(graph.timesteps, int) and 1 <= graph.timesteps <= MAX_TIMESTEPS,
           f"timesteps must be an integer in 1..{MAX_TIMESTEPS}, not {graph.timesteps!r}")
    _check(isinstance(graph.readout, Readout), f"unknown readout {graph.readout!r}")
    names = [graph.input.name] + [p.name for p in graph.populations]
    _check(len(set(names)) == len(names), f"population names are not unique: {names}")
    for k, pop in enumerate(graph.populations, start=1):
        where = f"population {k} ('{pop.name}')"
        _check(pop.size >= 1, f"{where} is empty")
        _check(pop.bias.shape == (pop.size,), f"{where}: bias shape {pop.bias.shape} != ({pop.size},)")
        _check(int(np.prod(pop.shape)) == pop.size, f"{where}: shape {pop.shape} does not hold "
               f"{pop.size} neurons")
        if pop.maxpool:
            inc = graph.incoming(k)
            _check(pop.spiking and len(inc) == 1 and isinstance(inc[0], MaxPool),
                   f"{where}: a max-pool population has exactly one incoming MaxPool projection")
            _check(not pop.bias.any() and pop.theta == 1 and pop.v_min == 0 and pop.v_max == 0,
                   f"{where}: a max-pool population has bias 0, theta 1 and v_min = v_max = 0")
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
        _check(isinstance(proj, (Dense, Conv, MaxPool)),
               f"{where}: unsupported projection {type(proj).__name__}")
        _check(0 <= proj.src < proj.dst < graph.n_pops,
               f"{where}: projections must go forward between existing populations")
        _check((proj.src, proj.dst) not in seen, f"{where} appears twice")
        seen.add((proj.src, proj.dst))
        _check(proj.src == 0 or graph.pop(proj.src).spiking,
               f"{where}: the source population does not spike")
        if isinstance(proj, MaxPool):
            _verify_maxpool(graph, proj, where)
            continue
        _check(not graph.pop(proj.dst).maxpool, f"{where}: only a MaxPool feeds a max-pool population")
        _check(proj.bits in WEIGHT_BITS, f"{where}: bits must be one of {WEIGHT_BITS}, not {proj.bits}")
        if isinstance(proj, Conv):
            _verify_conv(graph, proj, where)
        else:
            shape = (graph.size(proj.dst), graph.size(proj.src))
            _check(proj.weights.shape == shape, f"{where}: weights shape {proj.weights.shape} != {shape}")
        lim = weight_limit(proj.bits)
        _check(int(np.abs(proj.weights).max(initial=0)) <= lim,
               f"{where}: weights exceed the {proj.bits}-bit range [-{lim}, {lim}]")
    return graph
