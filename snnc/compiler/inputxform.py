"""Front-end helper: a constant scale and shift of the model's input folds into input quantization.

Many models normalize their input inside ``forward``: ``x / 255``, ``x * 0.5``, ``x - 0.5``,
``(x - mean) / std`` with constant ``mean`` and ``std`` (Python numbers, constant tensors or
registered buffers that broadcast over one sample, e.g. shape ``(C, 1, 1)``). The SNN's input
layer receives integer events ``round(x' / s_in)``, so snnc composes such a chain into one
elementwise affine map

    x' = (x - offset) * gain

(:class:`~snnc.compiler.floatnet.InputTransform`, ``offset`` and ``gain`` broadcastable to the
per-sample input shape), calibrates on ``x'`` and stores the map in the bundle
(``meta["input_transform"]``), where :func:`snnc.compiler.data.quantize_inputs` applies it before
quantizing. The extracted network, transform included, is still checked against the model.

The chain starts at the model's input. Each step is an addition, subtraction, multiplication or
division (``+ - * /``, ``torch.add/sub/mul/div``, their ``Tensor`` and aten spellings) of the
current value and a constant, or a flatten/view/no-op; each value in the chain has exactly one
reader (shape queries aside), so everything downstream reads the transformed value. The chain
ends at the first other operator (normally the first convolution or linear layer). Anything else
(``x * x``, ``16 / x``, a constant that would broadcast a sample to a larger shape, an input read
both before and after the transform) is left to the walker, which refuses it with a message
naming the operator. A zero or non-finite gain (``x * 0``) is refused here.
"""

from __future__ import annotations

import numpy as np
import torch

from . import fxops
from .errors import SnncError
from .floatnet import InputTransform

__all__ = ["find_input_transform", "reshape_transform"]

_ARITH = ("add", "sub", "rsub", "mul", "div")
_PASS = ("flatten", "identity")


def _readers(node, gm) -> list:
    return [u for u in node.users if fxops.kind(u, gm) not in ("shape", "guard")]


def _downstream(placeholder) -> set:
    """Every node computed from the input (constants are the nodes outside this set)."""
    seen, stack = set(), [placeholder]
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(n.users)
    return seen


def _constant(value, view) -> np.ndarray | None:
    """A constant operand as a float64 array broadcastable to one sample ``view`` (None if it is
    not a number or tensor, or would change the sample's shape)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
        return None
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point() and value.dtype not in (torch.int64, torch.int32):
            return None
        value = value.detach().to(torch.float64).cpu().numpy()
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == len(view) + 1:          # a leading batch axis of size 1
        if arr.shape[0] != 1:
            return None
        arr = arr[0]
    if arr.ndim > len(view):
        return None
    try:
        if np.broadcast_shapes(arr.shape, view) != tuple(view):
            return None
    except ValueError:
        return None
    return arr


def _step(kind, a, cur, values, inside):
    """``(g, b)`` of the step ``y = g * x + b`` for node arguments ``a`` (x = ``cur``), or None."""
    operands = [a.get("input"), a.get("other")]
    if sum(o is cur for o in operands) != 1 or a.get("rounding_mode") is not None:
        return None
    pos = operands.index(cur)
    other = operands[1 - pos]
    if isinstance(other, torch.fx.Node):
        if other in inside:
            return None
        other = values.get(other)
    view = tuple(values[cur].shape[1:])
    c = _constant(other, view)
    alpha = a.get("alpha", 1)
    if c is None or isinstance(alpha, torch.fx.Node):
        return None
    one = np.ones(())
    if kind == "mul":
        return c, np.zeros(())
    if kind == "div":
        if pos != 0:
            return None                    # c / x is not affine
        with np.errstate(divide="ignore"):
            return one / c, np.zeros(())
    if kind == "add":
        return (one, alpha * c) if pos == 0 else (alpha * one, c)
    if kind == "sub":                      # input - alpha * other
        return (one, -alpha * c) if pos == 0 else (-alpha * one, c)
    # rsub: other - alpha * input
    return (-alpha * one, c) if pos == 0 else (one, -alpha * c)


def _minimal(a: np.ndarray, shape) -> np.ndarray:
    """``a`` broadcast to ``shape``, then reduced to size 1 along every axis it is constant on."""
    a = np.broadcast_to(a, shape)
    for axis in range(a.ndim):
        first = a.take([0], axis=axis)
        if np.array_equal(a, np.broadcast_to(first, a.shape)):
            a = first
    return np.ascontiguousarray(a)


def _reshape(a: np.ndarray, old, new) -> np.ndarray:
    """An array broadcastable to sample shape ``old`` as one broadcastable to ``new`` (same
    number of values, flatten order)."""
    if a.size == 1:
        return a.reshape((1,) * len(new))
    return np.broadcast_to(a, old).reshape(new)


def find_input_transform(gm, values, input_shape):
    """Find the chain of constant scales and shifts applied to the input (see the module doc).

    Parameters
    ----------
    gm : torch.fx.GraphModule
    values : dict
        Every node's value on an example input.
    input_shape : tuple of int
        Per-sample shape of the input.

    Returns
    -------
    folded : dict
        ``{node: its input node}`` for each folded arithmetic node (the walker passes its input
        through unchanged).
    transform : InputTransform or None
        In the per-sample ``input_shape``; None when the model starts with no such chain.

    Raises
    ------
    SnncError
        When the composed gain is zero or not finite somewhere (``x * 0``, ``x / 0``).
    """
    placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
    inside = _downstream(placeholder)
    folded, descs = {}, []
    g, b = np.ones(()), np.zeros(())
    cur = placeholder
    view = tuple(input_shape)
    while True:
        readers = _readers(cur, gm)
        if len(readers) != 1:
            break
        node = readers[0]
        kind = fxops.kind(node, gm)
        value = values.get(node)
        if kind not in _PASS + _ARITH or not isinstance(value, torch.Tensor):
            break
        new_view = tuple(value.shape[1:])
        if node.op == "call_module":
            a = {"input": node.args[0] if node.args else node.kwargs.get("input")}
        else:
            a = fxops.arguments(node)
        if kind in _PASS:
            if (a.get("input") is not cur or a.get("training") or a.get("train")
                    or int(np.prod(new_view)) != int(np.prod(view))):
                break
            if new_view != view:
                g, b = _reshape(g, view, new_view), _reshape(b, view, new_view)
            view, cur = new_view, node
            continue
        step = None if new_view != view else _step(kind, a, cur, values, inside)
        if step is None:
            break
        sg, sb = step
        g, b = sg * g, sg * b + sb
        folded[node] = cur
        descs.append(fxops.describe(node, gm))
        cur = node
    if not folded:
        return {}, None
    g = _reshape(g, view, tuple(input_shape)) if view != tuple(input_shape) else g
    b = _reshape(b, view, tuple(input_shape)) if view != tuple(input_shape) else b
    shape = tuple(input_shape)
    g, b = _minimal(g, shape), _minimal(b, shape)
    where = ", ".join(descs)
    if not (np.isfinite(g).all() and (g != 0).all() and np.isfinite(b).all()):
        raise SnncError(f"the model's input transform ({where}) multiplies the input by 0 or by "
                        "a non-finite number: snnc folds a constant scale and shift of the input "
                        "into the input quantization, x' = (x - offset) * gain, with a nonzero, "
                        "finite gain; fix the constants")
    offset = _minimal(-b / g, shape)
    return folded, InputTransform(offset, g)


def reshape_transform(t: InputTransform, old, new) -> InputTransform:
    """``t`` (for samples of shape ``old``) for the same samples viewed as ``new``."""
    old, new = tuple(old), tuple(new)
    if old == new:
        return t
    return InputTransform(*(_minimal(_reshape(a, old, new), new) for a in (t.offset, t.gain)))
