"""Cross-layer equalization (Nagel et al. 2019, "Data-free quantization through weight
equalization and bias correction"), a pure pass on the float network before calibration.

ReLU is positively homogeneous, ``relu(x / s) = relu(x) / s`` for ``s > 0``, and so are max and
average pools per channel. Dividing output channel ``i`` of a spiking layer ``L`` (row ``i`` of
every term of ``L`` and its bias) by ``s_i`` and multiplying by ``s_i`` the weights that read
channel ``i`` downstream (the columns of every term whose source is ``L``, directly or through
pools; an identity shortcut's diagonal too) leaves the network's function unchanged, while
moving range between the two layers' weights. With ``r1_i`` the largest ``|w|`` of channel
``i``'s weights in ``L`` and ``r2_i`` that of the weights reading it,
``s_i = sqrt(r1_i / r2_i)`` makes both ``sqrt(r1_i r2_i)``: per-layer quantization scales then
waste less resolution on a few wide channels. The pass sweeps the layers in order a few times
(the ranges interact) and skips a layer that is capped (ReLU6: not homogeneous), the readout,
and channels without weights on either side.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .floatnet import FloatNet, Layer, Pool

__all__ = ["equalize"]


def _channels(net: FloatNet, name: str) -> tuple[int, int]:
    """(channels, values per channel) of node ``name``'s output."""
    shape = net.shape(name)
    return (shape[0], int(np.prod(shape[1:]))) if len(shape) == 3 else (int(shape[0]), 1)


def _readers(net: FloatNet, name: str) -> list[tuple[str, int]]:
    """``(layer, term index)`` of every term that reads ``name``'s channels, through pools."""
    out = []
    for node in net.nodes:
        if isinstance(node, Pool) and node.src == name:
            out += _readers(net, node.name)
        elif isinstance(node, Layer):
            out += [(node.name, i) for i, t in enumerate(node.terms) if t.src == name]
    return out


def _in_scale(term, per, s):
    """The term's weights with input channel ``c`` multiplied by ``s[c]``."""
    if term.conv:
        return replace(term, weight=term.weight * s[None, :, None, None])
    return replace(term, weight=term.weight * np.repeat(s, per)[None, :])


def _in_range(term, src_channels, per):
    w = np.abs(term.weight)
    if term.conv:
        return w.max(axis=(0, 2, 3))
    return w.reshape(w.shape[0], src_channels, per).max(axis=(0, 2))


def _out_range(layer: Layer):
    return np.max([np.abs(t.weight).reshape(t.weight.shape[0], -1).max(axis=1)
                   if t.conv else np.abs(t.weight).max(axis=1) for t in layer.terms], axis=0)


def equalize(net: FloatNet, rounds: int = 4) -> FloatNet:
    """``net`` with every eligible layer's channels equalized against their readers."""
    names = [n.name for n in net.nodes]
    for _ in range(rounds):
        for name in names:
            node = net.node(name)          # the current node: earlier steps rescale readers
            if not (isinstance(node, Layer) and node.relu and node.cap is None):
                continue
            readers = _readers(net, node.name)
            if not readers:
                continue
            channels, per = _channels(net, node.name)
            r1 = _out_range(node)          # per output channel (a dense layer's are neurons)
            def src_per(n, i):
                return _channels(net, net.node(n).terms[i].src)[1]
            r2 = np.max([_in_range(net.node(n).terms[i], channels, src_per(n, i))
                         for n, i in readers], axis=0)
            ok = (r1 > 0) & (r2 > 0)
            s = np.ones(channels)
            s[ok] = np.sqrt(r1[ok] / r2[ok])
            if np.allclose(s, 1.0):
                continue
            new_terms = tuple(t.scaled(1.0 / s) for t in node.terms)
            nodes = {node.name: replace(node, terms=new_terms,
                                        bias=node.bias / np.repeat(s, per))}
            for n, i in readers:
                layer = nodes.get(n, net.node(n))
                terms = list(layer.terms)
                terms[i] = _in_scale(terms[i], src_per(n, i), s)
                nodes[n] = replace(layer, terms=tuple(terms))
            net = replace(net, nodes=tuple(nodes.get(x.name, x) for x in net.nodes))
    return net
