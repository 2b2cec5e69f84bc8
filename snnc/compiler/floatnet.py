"""The float network as snnc sees it: a DAG of spiking layers, pooling layers and a readout.

:func:`snnc.compiler.extract.extract_layers` produces a :class:`FloatNet`; calibration and
conversion consume it. Every value in the network is the output of a *node* (or the input):

- :class:`Layer`: ``pre = bias + sum_j term_j(src_j)``, a sum of linear operators (a fully
  connected matrix or a 2-D convolution, BatchNorm already folded in) applied to earlier
  nodes' outputs. A spiking layer outputs ``min(relu(pre), cap)``; the last node is the readout
  (``relu=False``) and outputs ``pre``. Several terms are a residual addition.
- :class:`Pool`: a max or average pool over an earlier node (windows = stride, no padding).

Each node's output has a natural ``shape`` (``(C, H, W)`` for feature maps, ``(n,)`` otherwise);
values are flattened in ``torch.flatten`` order, so a flatten or view between nodes needs no
node of its own. Weights, biases and activations are float64.

A constant scale and shift the model applies to its input (``x / 255``, ``(x - mean) / std``) is
the :class:`InputTransform` ``x' = (x - offset) * gain``: the nodes see ``x'``, and
:meth:`FloatNet.forward` and :meth:`FloatNet.activations` take the model's raw inputs ``x`` and
apply it first (:mod:`snnc.compiler.inputxform`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Term", "Layer", "Pool", "FloatNet", "InputTransform", "INPUT", "fold_batchnorm",
           "avgpool_after_conv", "apply_input_transform"]

#: Name of the input in :attr:`Term.src` / :attr:`Pool.src`.
INPUT = "input"


@dataclass(frozen=True, eq=False)
class Term:
    """One linear operator of a layer's input: ``weight`` applied to node ``src``.

    ``weight`` is ``(out, in)`` for a fully connected term (``in`` counts the source's values in
    flatten order) or ``(C_out, C_in, kh, kw)`` for a convolution with ``stride`` and zero
    ``padding``. ``identity`` marks a shortcut (``x`` added directly, possibly scaled by a
    folded BatchNorm): a diagonal matrix or 1x1 kernel.
    """
    src: str
    weight: np.ndarray
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    identity: bool = False

    @property
    def conv(self) -> bool:
        return self.weight.ndim == 4

    def out_shape(self, src_shape) -> tuple[int, ...]:
        if not self.conv:
            return (self.weight.shape[0],)
        _, h, w = src_shape
        co, _, kh, kw = self.weight.shape
        (sy, sx), (py, px) = self.stride, self.padding
        return (co, (h + 2 * py - kh) // sy + 1, (w + 2 * px - kw) // sx + 1)

    def apply(self, x: torch.Tensor, src_shape) -> torch.Tensor:
        """``x`` (B, n_src) float64 -> (B, n_out)."""
        w = torch.from_numpy(self.weight)
        if not self.conv:
            return x @ w.T
        out = F.conv2d(x.reshape(x.shape[0], *src_shape), w, stride=self.stride,
                       padding=self.padding)
        return out.reshape(x.shape[0], -1)

    def scaled(self, per_output: np.ndarray) -> "Term":
        """The term with output channel (conv) or output row (dense) ``o`` scaled by ``per_output[o]``."""
        s = per_output.reshape((-1,) + (1,) * (self.weight.ndim - 1))
        return replace(self, weight=self.weight * s)


@dataclass(frozen=True, eq=False)
class Layer:
    """A spiking layer (``relu=True``) or the readout: ``bias + sum(terms)``, then ReLU and cap.

    Attributes
    ----------
    name : str
        The model's layer that produced the input current (e.g. the Conv2d or Linear).
    shape : tuple of int
    terms : tuple of Term
    bias : float array (size,)
        Per neuron, in flatten order.
    relu : bool
    cap : float or None
        Upper clip of the activation (6 for ReLU6).
    """
    name: str
    shape: tuple
    terms: tuple
    bias: np.ndarray
    relu: bool = True
    cap: float | None = None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True, eq=False)
class Pool:
    """``kind`` ``"max"`` or ``"avg"`` pooling of node ``src`` with ``kernel = (ky, kx)`` windows,
    stride equal to the kernel, no padding (rows and columns past the last window dropped)."""
    name: str
    shape: tuple
    src: str
    kind: str
    kernel: tuple

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


def apply_input_transform(x, offset, gain, input_shape) -> np.ndarray:
    """``(x - offset) * gain`` per sample (float64, same shape as ``x``); ``offset`` and
    ``gain`` broadcast to ``input_shape`` and ``x`` holds samples of that shape or flattened."""
    x = np.asarray(x, dtype=np.float64)
    shaped = x.reshape((len(x), *input_shape))
    out = (shaped - np.asarray(offset, dtype=np.float64)) * np.asarray(gain, dtype=np.float64)
    return out.reshape(x.shape)


@dataclass(frozen=True, eq=False)
class InputTransform:
    """``x' = (x - offset) * gain``, elementwise per sample; both arrays have one axis per
    input axis (size 1 where they are constant: ``(1, 1, 1)`` for a scalar, ``(C, 1, 1)`` per
    channel)."""
    offset: np.ndarray
    gain: np.ndarray

    def apply(self, x, input_shape) -> np.ndarray:
        return apply_input_transform(x, self.offset, self.gain, input_shape)

    def as_json(self) -> dict:
        return {"offset": self.offset.tolist(), "gain": self.gain.tolist()}


@dataclass(frozen=True, eq=False)
class FloatNet:
    """The network: nodes in evaluation order; the last one is the readout :class:`Layer`.

    Attributes
    ----------
    input_shape : tuple of int
        Per-sample input shape (without the batch axis).
    nodes : tuple of Layer or Pool
    dropped : tuple of str
        Operators removed as no-ops at inference (for the compile report).
    final : str or None
        The dropped trailing ``"softmax"`` or ``"log_softmax"``, if any.
    input_transform : InputTransform or None
        The model's constant scale and shift of its input, applied before the first node.
    warnings : tuple of str
        Things the user should know about the extraction (for the compile report).
    """
    input_shape: tuple
    nodes: tuple
    dropped: tuple = ()
    final: str | None = None
    input_transform: InputTransform | None = None
    warnings: tuple = ()
    _index: dict = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_index", {n.name: n for n in self.nodes})

    @classmethod
    def from_dense(cls, input_shape, layers, **kwargs) -> "FloatNet":
        """An MLP from ``[(name, weight, bias), ...]``: ReLU after every layer but the last."""
        nodes, src = [], INPUT
        for k, (name, w, b) in enumerate(layers):
            w, b = np.asarray(w, dtype=np.float64), np.asarray(b, dtype=np.float64)
            last = k == len(layers) - 1
            nodes.append(Layer(name, (w.shape[0],), (Term(src, w),), b, relu=not last))
            src = name
        return cls(tuple(input_shape), tuple(nodes), **kwargs)

    def node(self, name: str):
        return self._index[name]

    def shape(self, name: str) -> tuple:
        return tuple(self.input_shape) if name == INPUT else tuple(self._index[name].shape)

    @property
    def readout(self) -> Layer:
        return self.nodes[-1]

    @property
    def spiking(self) -> tuple:
        """The spiking layers (those with a ReLU), in order: each has one calibrated scale."""
        return tuple(n for n in self.nodes if isinstance(n, Layer) and n.relu)

    def transform_input(self, x) -> np.ndarray:
        """The raw inputs ``x`` as the first node sees them (float64, same shape): the
        :attr:`input_transform` applied, if any."""
        if self.input_transform is None:
            return np.asarray(x, dtype=np.float64)
        return self.input_transform.apply(x, self.input_shape)

    def activations(self, x) -> dict[str, np.ndarray]:
        """Float64 output of every node (flattened, (B, size)) and of ``"input"`` (after the
        input transform) for raw inputs ``x``."""
        x = torch.as_tensor(self.transform_input(x)).reshape(len(x), -1)
        out = {INPUT: x}
        with torch.no_grad():
            for node in self.nodes:
                out[node.name] = self._forward_node(node, out)
        return {k: v.numpy() for k, v in out.items()}

    def forward(self, x) -> np.ndarray:
        """Logits (float64, (B, n_out)) for ``x`` of shape (B, ...)."""
        return self.activations(x)[self.readout.name]

    def _forward_node(self, node, out) -> torch.Tensor:
        if isinstance(node, Pool):
            src = out[node.src]
            x = src.reshape(src.shape[0], *self.shape(node.src))
            pool = F.max_pool2d if node.kind == "max" else F.avg_pool2d
            return pool(x, node.kernel, node.kernel).reshape(src.shape[0], -1)
        pre = torch.from_numpy(node.bias).expand(out[INPUT].shape[0], -1).clone()
        for term in node.terms:
            pre = pre + term.apply(out[term.src], self.shape(term.src))
        if not node.relu:
            return pre
        act = torch.relu(pre)
        return act if node.cap is None else torch.clamp(act, max=node.cap)


def fold_batchnorm(terms, bias, shape, scale, shift):
    """Fold ``y = x * scale[c] + shift[c]`` (per channel ``c`` = first axis of ``shape``) into
    the terms and the per-neuron bias of a layer input; return ``(terms, bias)``."""
    per_neuron = np.repeat(scale, int(np.prod(shape)) // len(scale))
    new_terms = tuple(t.scaled(scale if t.conv else per_neuron) for t in terms)
    new_bias = bias * per_neuron + np.repeat(shift, int(np.prod(shape)) // len(shift))
    return new_terms, new_bias


def avgpool_after_conv(term: Term, kernel) -> Term:
    """The convolution equal to ``term`` followed by a ``kernel`` average pool (stride = kernel).

    With stride ``s`` and an ``a x b`` pool, output ``o`` averages conv outputs ``o*a .. o*a+a-1``,
    so the kernel grows to ``(a-1)*s + k`` and the stride to ``a*s`` (same padding); the output
    sizes agree with PyTorch's floor mode.
    """
    (ky, kx), (sy, sx) = kernel, term.stride
    co, ci, kh, kw = term.weight.shape
    w = np.zeros((co, ci, (ky - 1) * sy + kh, (kx - 1) * sx + kw))
    for a in range(ky):
        for b in range(kx):
            w[:, :, a * sy:a * sy + kh, b * sx:b * sx + kw] += term.weight / (ky * kx)
    return replace(term, weight=w, stride=(sy * ky, sx * kx), identity=False)
