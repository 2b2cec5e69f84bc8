"""Front-end pass: turn a loaded PyTorch network into a flat float multilayer perceptron.

:func:`extract_layers` traces the network with :mod:`torch.fx` (an ``nn.Module`` is traced with
``torch.fx.symbolic_trace``; an ExportedProgram's ``ep.module()`` already is an fx graph of aten
operators), runs the graph once on an example input to learn every value's shape, and maps each
operator on the data path to one of a few kinds:

==========  ==========================================================================
linear      ``nn.Linear``, ``F.linear``, ``aten.linear``, ``aten.addmm``
relu        ``nn.ReLU``, ``F.relu``, ``torch.relu``, ``Tensor.relu``, ``aten.relu(_)``
flatten     ``nn.Flatten``, ``torch.flatten``, ``view``/``reshape`` that keep the batch axis
identity    ``nn.Dropout`` (inference), ``nn.Identity``, ``clone``/``contiguous``/``detach``
softmax     a trailing ``Softmax``/``LogSoftmax`` over the class axis (monotonic, so dropped)
==========  ==========================================================================

Anything else raises :class:`SnncError` naming the operator and the layer it belongs to.

Postconditions: the result is ``Linear (ReLU Linear)*``; the last Linear is the readout. A ReLU
after the last Linear is rejected (not silently dropped): it changes the prediction whenever every
logit is negative, and the readout integrates the last Linear's raw output. Consecutive ReLUs are
merged; two Linears without a ReLU between them are rejected. The extracted network is checked
against the model's own output on the example input.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import SnncError, describe_module

__all__ = ["LinearLayer", "FloatMLP", "extract_layers", "SUPPORTED"]

#: The layer kinds named in error messages.
SUPPORTED = "nn.Linear, nn.ReLU, nn.Flatten, nn.Dropout"
_ANN = f"snnc compiles feed-forward linear networks ({SUPPORTED})"

aten = torch.ops.aten
_LINEAR_FUNCS = {F.linear, aten.linear.default}
_RELU_FUNCS = {F.relu, torch.relu, torch.relu_, aten.relu.default, aten.relu_.default}
_FLATTEN_FUNCS = {torch.flatten, torch.reshape, aten.flatten.using_ints, aten.view.default,
                  aten.reshape.default, aten._unsafe_view.default}
_IDENTITY_FUNCS = {F.dropout, aten.clone.default, aten.alias.default, aten.detach.default,
                   aten.contiguous.default, torch.clone}
_SOFTMAX_FUNCS = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax,
                  aten.softmax.int, aten.log_softmax.int, aten._softmax.default,
                  aten._log_softmax.default}
_SHAPE_FUNCS = {aten.sym_size.int, aten.size.default}
_RELU_METHODS = {"relu", "relu_"}
_FLATTEN_METHODS = {"view", "reshape", "flatten"}
_IDENTITY_METHODS = {"contiguous", "clone", "detach"}
_SOFTMAX_METHODS = {"softmax", "log_softmax"}
_SHAPE_METHODS = {"size", "dim"}
_IDENTITY_MODULES = (nn.Dropout, nn.Identity)
_SOFTMAX_MODULES = (nn.Softmax, nn.LogSoftmax)


@dataclass(frozen=True)
class LinearLayer:
    """One fully connected layer of the float network: ``y = x @ weight.T + bias`` (float64)."""
    name: str
    weight: np.ndarray
    bias: np.ndarray

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]


@dataclass(frozen=True)
class FloatMLP:
    """The network as snnc sees it: Linear layers with a ReLU after every one but the last.

    Attributes
    ----------
    input_shape : tuple of int
        Per-sample input shape (without the batch axis).
    layers : tuple of LinearLayer
    dropped : tuple of str
        Operators that were removed as no-ops at inference (for the compile report).
    final : str or None
        The dropped trailing ``"softmax"`` or ``"log_softmax"``, if any.
    """
    input_shape: tuple[int, ...]
    layers: tuple[LinearLayer, ...]
    dropped: tuple[str, ...] = ()
    final: str | None = None

    def activations(self, x) -> list[np.ndarray]:
        """Float64 outputs of every layer for ``x`` of shape (B, ...): post-ReLU hidden, then logits."""
        h = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        outs = []
        for k, layer in enumerate(self.layers):
            h = h @ layer.weight.T + layer.bias
            if k < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
            outs.append(h)
        return outs

    def forward(self, x) -> np.ndarray:
        """Logits (float64) for ``x`` of shape (B, ...)."""
        return self.activations(x)[-1]


# ---------------------------------------------------------------------------------------------
# Naming nodes for error messages


def _type_name(type_str: str) -> str:
    """``'torch.nn.modules.rnn.LSTM'`` -> ``'nn.LSTM'``."""
    if type_str.startswith("torch.nn.modules."):
        return "nn." + type_str.rsplit(".", 1)[-1]
    return type_str


def _fn_name(target) -> str:
    """``F.relu``, ``torch.sigmoid``, ``aten.linear.default``, ... for a call_function target."""
    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    mod = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", None) or str(target)
    if mod.startswith("torch.nn.functional"):
        return f"F.{name}"
    if mod.startswith("torch") or (not mod and getattr(torch, name, None) is target):
        return f"torch.{name}"
    return name if mod in ("", "builtins", "_operator") else f"{mod}.{name}"


def _describe(node, gm) -> str:
    """Where ``node`` comes from, in the user's terms: ``"nn.LSTM at 'rnn'"``."""
    if node.op == "call_module":
        return f"{describe_module(gm.get_submodule(node.target))} at '{node.target}'"
    what = node.target if node.op == "call_method" else _fn_name(node.target)
    what = f"Tensor.{what}" if node.op == "call_method" else what
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, type_str = list(stack.values())[-1]
        if path:
            return f"{_type_name(type_str)} at '{path}' ({what})"
    return f"{what} ('{node.name}' in forward)"


def _layer_name(node, gm) -> str:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path = list(stack.values())[-1][0]
        if path:
            return path
    # F.linear(x, self.fc_w, ...) in a traced module: name it after the weight attribute.
    weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
    if getattr(weight, "op", None) == "get_attr":
        return str(weight.target).rsplit(".", 1)[0] if "." in str(weight.target) else str(weight.target)
    return node.name


# ---------------------------------------------------------------------------------------------
# Tracing


def _trace(module) -> torch.fx.GraphModule:
    if isinstance(module, torch.fx.GraphModule):
        return module
    try:
        return torch.fx.symbolic_trace(module.eval())
    except Exception as exc:  # torch.fx raises many kinds of errors on dynamic Python code
        raise SnncError(
            f"could not trace {describe_module(module)}'s forward with torch.fx "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); export the "
            "model with torch.export instead: torch.export.save(torch.export.export(model, "
            "(example,)), 'model.pt2')") from None


class _Recorder(torch.fx.Interpreter):
    """Runs the graph and keeps every node's value."""

    def __init__(self, gm):
        super().__init__(gm)
        self.values = {}

    def run_node(self, n):
        out = super().run_node(n)
        self.values[n] = out
        return out


def _example_dtype(gm) -> torch.dtype:
    for p in gm.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _first_linear_features(gm) -> int | None:
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.Linear):
            return gm.get_submodule(node.target).in_features
        if node.op == "call_function" and node.target in _LINEAR_FUNCS | {aten.addmm.default}:
            w = node.args[2] if node.target is aten.addmm.default else node.args[1]
            if getattr(w, "op", None) == "get_attr":
                t = _attr(gm, w.target)
                return t.shape[0] if node.target is aten.addmm.default else t.shape[1]
    return None


def _reject_unsupported_modules(gm) -> None:
    """Name the first unsupported submodule call (when there is no input shape to run with)."""
    for node in gm.graph.nodes:
        if node.op == "call_module" and _kind(node, gm) is None:
            raise SnncError(f"{_describe(node, gm)} is not supported: {_ANN}")


def _attr(gm, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _run(gm, example) -> dict:
    rec = _Recorder(gm)
    try:
        with torch.no_grad():
            rec.run(example)
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SnncError(f"running the model on an example input of shape "
                        f"{list(example.shape)} failed ({type(exc).__name__}: {msg}); check "
                        "--input-shape (the per-sample shape, without the batch axis)") from None
    return rec.values


# ---------------------------------------------------------------------------------------------
# Classifying nodes


def _as_numpy(t) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy().copy()


def _arg(node, index: int, name: str, default=None):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _kind(node, gm) -> str | None:
    """The kind of a data-path node: linear, relu, flatten, identity, softmax, shape, guard."""
    op, target = node.op, node.target
    if op == "call_module":
        if str(target).startswith("_guards"):
            return "guard"
        mod = gm.get_submodule(target)
        if type(mod) is nn.Linear:
            return "linear"
        if type(mod) is nn.ReLU:
            return "relu"
        if type(mod) is nn.Flatten:
            return "flatten"
        if type(mod) in _IDENTITY_MODULES:
            return "identity"
        if type(mod) in _SOFTMAX_MODULES:
            return "softmax"
        return None
    if op == "call_method":
        for kind, names in (("relu", _RELU_METHODS), ("flatten", _FLATTEN_METHODS),
                            ("identity", _IDENTITY_METHODS), ("softmax", _SOFTMAX_METHODS),
                            ("shape", _SHAPE_METHODS)):
            if target in names:
                return kind
        return None
    if op == "call_function":
        if target in _LINEAR_FUNCS or target is aten.addmm.default:
            return "linear"
        for kind, funcs in (("relu", _RELU_FUNCS), ("flatten", _FLATTEN_FUNCS),
                            ("softmax", _SOFTMAX_FUNCS), ("shape", _SHAPE_FUNCS)):
            if target in funcs:
                return kind
        if target is aten.dropout.default:
            if _arg(node, 2, "train", False):
                raise SnncError(f"{_describe(node, gm)} was exported in training mode: call "
                                "model.eval() before torch.export.export")
            return "identity"
        if target in _IDENTITY_FUNCS:
            return "identity"
        if target is builtins.getattr and node.args[1] in ("shape", "ndim"):
            return "shape"
    return None


def _linear_params(node, gm, values) -> tuple[np.ndarray, np.ndarray]:
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        w, b = mod.weight, mod.bias
    elif node.target is aten.addmm.default:
        if _arg(node, 3, "beta", 1) != 1 or _arg(node, 4, "alpha", 1) != 1:
            raise SnncError(f"{_describe(node, gm)}: addmm with beta/alpha != 1 is not supported")
        w, b = values[node.args[2]].T, values[node.args[0]]
    else:
        w_node, b_node = _arg(node, 1, "weight"), _arg(node, 2, "bias")
        w = values[w_node] if isinstance(w_node, torch.fx.Node) else w_node
        b = values[b_node] if isinstance(b_node, torch.fx.Node) else b_node
    w = _as_numpy(w)
    bias = np.zeros(w.shape[0]) if b is None else _as_numpy(b).reshape(-1)
    if bias.shape != (w.shape[0],):
        raise SnncError(f"{_describe(node, gm)}: bias of shape {list(bias.shape)} does not match "
                        f"{w.shape[0]} outputs")
    return w, bias


def _softmax_dim(node, gm, ndim: int):
    if node.op == "call_module":
        dim = gm.get_submodule(node.target).dim
    else:
        dim = _arg(node, 1, "dim")
    if dim is None:  # legacy implicit dim: 1 for 2-D inputs
        dim = 0 if ndim in (0, 1, 3) else 1
    return dim % ndim


def _is_log_softmax(node, gm) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), nn.LogSoftmax)
    return "log" in (node.target if node.op == "call_method" else _fn_name(node.target))


def _check_data_input(node, gm, current, dep) -> None:
    inputs = [n for n in node.all_input_nodes if n in dep]
    index = 1 if node.op == "call_function" and node.target is aten.addmm.default else 0
    data = _arg(node, index, "input")
    if inputs != [current] or data is not current:
        raise SnncError(f"{_describe(node, gm)} does not follow the previous layer: {_ANN}, "
                        "one layer after the other (no branches, skips or residual additions)")


def _walk(gm, values) -> tuple[list, tuple, str | None]:
    """Follow the data path from the input; return [(kind, name, payload)], dropped ops, final."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    current = placeholders[0]
    dep, shape_nodes = {current}, set()
    ops, dropped, ended, final = [], [], None, None
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "get_attr"):
            continue
        if node.op == "output":
            outs = torch.fx.node.map_arg(node.args[0], lambda n: n)
            outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
            if outs != [current]:
                raise SnncError(f"the model must return exactly one tensor, the class scores; it "
                                f"returns {len(outs)} value(s)")
            continue
        if not any(n in dep for n in node.all_input_nodes):
            if any(n in shape_nodes for n in node.all_input_nodes):
                shape_nodes.add(node)
            continue
        if [n for n in node.all_input_nodes if n in dep] != [current]:
            raise SnncError(f"{_describe(node, gm)} does not follow the previous layer: {_ANN}, "
                            "one layer after the other (no branches, skips or residual additions)")
        kind = _kind(node, gm)
        if kind is None:
            raise SnncError(f"{_describe(node, gm)} is not supported: {_ANN}")
        if kind == "guard":
            continue
        if kind == "shape":
            shape_nodes.add(node)
            continue
        _check_data_input(node, gm, current, dep)
        if ended is not None and kind != "identity":
            raise SnncError(f"{_describe(node, gm)} follows the final {ended}: only the class "
                            "scores' softmax may end the network")
        out, src = values[node], values[current]
        if kind == "linear":
            if src.ndim != 2:
                raise SnncError(
                    f"{_describe(node, gm)} receives a {src.ndim}-D input of shape "
                    f"{list(src.shape)}; snnc needs (batch, features) here: add nn.Flatten() "
                    "before it")
            ops.append(("linear", _layer_name(node, gm), _linear_params(node, gm, values)))
        elif kind == "relu":
            ops.append(("relu", _layer_name(node, gm), None))
        elif kind == "flatten":
            if not (out.ndim == 2 and out.shape[0] == src.shape[0]
                    and out.shape[1] * out.shape[0] == src.numel()):
                raise SnncError(f"{_describe(node, gm)} reshapes {list(src.shape)} to "
                                f"{list(out.shape)}; snnc only supports flattening each sample "
                                "to (batch, features)")
            if src.ndim != 2:
                dropped.append(_describe(node, gm))
        elif kind == "softmax":
            if _softmax_dim(node, gm, out.ndim) != out.ndim - 1:
                raise SnncError(f"{_describe(node, gm)} is not taken over the class axis")
            ended = _describe(node, gm)
            final = "log_softmax" if _is_log_softmax(node, gm) else "softmax"
            dropped.append(ended)
        else:
            dropped.append(_describe(node, gm))
        dep.add(node)
        current = node
    return ops, tuple(dropped), final


def _structure(ops: list, where: str) -> list[LinearLayer]:
    """Check ``Linear (ReLU Linear)*`` and return the Linear layers."""
    layers: list[LinearLayer] = []
    prev = None
    for kind, name, payload in ops:
        if kind == "relu" and prev == "relu":
            continue
        if kind == "relu" and prev is None:
            raise SnncError(f"the ReLU at '{name}' comes before the first nn.Linear; snnc "
                            "networks start with nn.Linear (after an optional nn.Flatten)")
        if kind == "linear" and prev == "linear":
            raise SnncError(f"nn.Linear at '{layers[-1].name}' is followed directly by nn.Linear "
                            f"at '{name}' without a ReLU; fold them into one nn.Linear or add "
                            "nn.ReLU between them")
        if kind == "linear":
            w, b = payload
            names = {layer.name for layer in layers}
            unique, k = name, 1
            while unique in names or unique == "input":
                k += 1
                unique = f"{name}_{k}"
            layers.append(LinearLayer(unique, w, b))
        prev = kind
    if not layers:
        raise SnncError(f"{where} has no nn.Linear layer: {_ANN}")
    if prev == "relu":
        raise SnncError(f"the network ends with a ReLU after nn.Linear at '{layers[-1].name}'; "
                        "remove it: snnc's readout integrates the last nn.Linear's output and "
                        "predicts its argmax")
    return layers


def extract_layers(module, input_shape=None) -> FloatMLP:
    """Extract the float MLP from an ``nn.Module`` or an ExportedProgram's ``ep.module()``.

    Parameters
    ----------
    module : torch.nn.Module or torch.fx.GraphModule
    input_shape : tuple of int, optional
        Per-sample input shape. Default: the shape stored in an exported graph's example input,
        else ``(in_features,)`` of the first Linear.

    Returns
    -------
    FloatMLP

    Raises
    ------
    SnncError
        For unsupported operators or structure, naming the layer and what to do.
    """
    gm = _trace(module)
    where = describe_module(module)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise SnncError(f"{where}'s forward takes {len(placeholders)} inputs; snnc compiles "
                        "networks with a single input tensor")
    stored = placeholders[0].meta.get("val")
    if stored is not None and hasattr(stored, "shape"):
        dims = tuple(stored.shape)
        if len(dims) < 2 or not all(isinstance(d, int) for d in dims[1:]):
            raise SnncError(f"the exported model's input has shape {list(dims)}; snnc needs a "
                            "batch axis first and fixed per-sample sizes (only the batch axis "
                            "may be dynamic)")
        example_shape = (dims[0] if isinstance(dims[0], int) else 2, *dims[1:])
        if input_shape is not None and int(np.prod(input_shape)) != int(np.prod(example_shape[1:])):
            raise SnncError(f"--input-shape {list(input_shape)} does not match the exported "
                            f"example input's per-sample shape {list(example_shape[1:])}")
    else:
        if input_shape is None:
            n = _first_linear_features(gm)
            if n is None:
                _reject_unsupported_modules(gm)
                raise SnncError(f"cannot tell {where}'s input shape: pass --input-shape")
            input_shape = (n,)
        example_shape = (2, *input_shape)
    if any(d < 1 for d in example_shape):
        raise SnncError(f"invalid input shape {list(example_shape[1:])}")
    gen = torch.Generator().manual_seed(0)
    example = torch.rand(example_shape, generator=gen).to(_example_dtype(gm))
    values = _run(gm, example)
    ops, dropped, final = _walk(gm, values)
    layers = _structure(ops, where)
    net = FloatMLP(tuple(example_shape[1:]), tuple(layers), dropped, final)
    _check_against_model(net, gm, values, example)
    return net


def _check_against_model(net: FloatMLP, gm, values, example) -> None:
    """The extracted network must reproduce the model's output (up to the dropped softmax)."""
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    out = torch.fx.node.map_arg(out_node.args[0], lambda n: values[n])
    out = out[0] if isinstance(out, (tuple, list)) else out
    logits = torch.from_numpy(net.forward(example.double().numpy()))
    if net.final == "log_softmax":
        logits = torch.log_softmax(logits, dim=-1)
    elif net.final == "softmax":
        logits = torch.softmax(logits, dim=-1)
    got = out.detach().double()
    if got.shape != logits.shape or not torch.allclose(got, logits, rtol=1e-3, atol=1e-4):
        raise SnncError("the extracted network does not reproduce the model's output; the model "
                        f"uses an operation snnc does not understand: {_ANN}")
