"""Magnitude pruning of the float network before calibration and quantization (a pure pass).

``snnc compile --prune F`` zeroes the smallest-magnitude weights so that a fraction ``F`` of the
prunable weights is zero (Han et al. 2015). Prunable: every weight of every layer's linear terms
(fully connected matrices and convolution kernels, BatchNorm already folded in), except identity
shortcuts, which are a residual connection's structure, not learned weights.

- ``scope="layer"`` (default): each layer reaches ``F`` on its own (its terms together).
- ``scope="global"``: one magnitude threshold for all layers (the ``F`` quantile of every
  prunable weight's magnitude), so that layers with many small weights lose more.

Zeros already in the model count towards ``F`` and stay zero: a layer that is already sparser
than ``F`` loses nothing. Ties at the threshold are broken by position (the first ones go), so
the fraction is met exactly (to the weight). Calibration then runs on the pruned network, and
quantization may round further weights to zero: the compile report gives both, per layer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .errors import SnncError
from .floatnet import FloatNet, Layer

__all__ = ["PRUNE_SCOPES", "PruneReport", "prune"]

PRUNE_SCOPES = ("layer", "global")


@dataclass(frozen=True)
class PruneReport:
    """Per layer: ``(name, prunable weights, zeros before, zeros after)``."""
    fraction: float
    scope: str
    layers: tuple[tuple[str, int, int, int], ...]

    def as_json(self) -> dict:
        return {"fraction": self.fraction, "scope": self.scope,
                "layers": [{"name": n, "weights": w, "zeros_before": b, "zeros_after": a}
                           for n, w, b, a in self.layers]}


def _prunable(layer: Layer) -> list[int]:
    return [i for i, t in enumerate(layer.terms) if not t.identity]


def _zero_smallest(mags: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask of the ``count`` smallest entries of ``mags`` (first positions on ties)."""
    order = np.argsort(mags, kind="stable")
    mask = np.zeros(mags.size, bool)
    mask[order[:count]] = True
    return mask


def prune(net: FloatNet, fraction: float, scope: str = "layer") -> tuple[FloatNet, PruneReport]:
    """``net`` with the smallest-magnitude weights zeroed (module docstring), and the report."""
    if not isinstance(fraction, (int, float)) or not 0.0 <= float(fraction) < 1.0:
        raise SnncError(f"--prune must be a fraction in [0, 1), e.g. 0.9 for 90% zeros, not "
                        f"{fraction!r}")
    if scope not in PRUNE_SCOPES:
        raise SnncError(f"--prune-scope must be one of {', '.join(PRUNE_SCOPES)}, not {scope!r}")
    fraction = float(fraction)
    layers = [n for n in net.nodes if isinstance(n, Layer) and _prunable(n)]
    flat = {n.name: np.concatenate([np.abs(n.terms[i].weight).ravel() for i in _prunable(n)])
            for n in layers}
    masks = {}
    if scope == "layer":
        for name, mags in flat.items():
            masks[name] = _zero_smallest(mags, int(round(fraction * mags.size)))
    else:
        allm = np.concatenate(list(flat.values())) if flat else np.zeros(0)
        mask = _zero_smallest(allm, int(round(fraction * allm.size)))
        start = 0
        for name, mags in flat.items():
            masks[name] = mask[start:start + mags.size]
            start += mags.size
    nodes, rows = [], []
    for node in net.nodes:
        if not (isinstance(node, Layer) and node.name in masks):
            nodes.append(node)
            continue
        mask, at, terms = masks[node.name], 0, list(node.terms)
        before = int(np.count_nonzero(flat[node.name] == 0))
        for i in _prunable(node):
            w = terms[i].weight
            cut = mask[at:at + w.size].reshape(w.shape)
            terms[i] = replace(terms[i], weight=np.where(cut, 0.0, w))
            at += w.size
        after = int(sum(np.count_nonzero(terms[i].weight == 0) for i in _prunable(node)))
        rows.append((node.name, int(flat[node.name].size), before, after))
        nodes.append(replace(node, terms=tuple(terms)))
    return replace(net, nodes=tuple(nodes)), PruneReport(fraction, scope, tuple(rows))
