"""Spellings of the operators snnc understands in a torch.fx graph, and their arguments.

A traced ``nn.Module`` shows ``call_module`` nodes (``nn.Conv2d``), torch functions (``F.relu``,
``torch.add``, ``operator.add``) and tensor methods (``x.view``); an ExportedProgram shows aten
operators (``aten.conv2d.default``). :func:`kind` maps all of them to one *kind*:

===================  ========================================================================
linear               ``nn.Linear``, ``F.linear``, ``aten.linear``, ``aten.addmm``
conv                 ``nn.Conv2d``, ``F.conv2d``, ``aten.conv2d`` (also ``.padding``: ``'same'``),
                     ``aten.convolution``
batchnorm            ``nn.BatchNorm1d/2d``, ``F.batch_norm``, ``aten.batch_norm``,
                     ``aten._native_batch_norm_legit_no_training``
relu                 ``nn.ReLU``, ``F.relu``, ``torch.relu``, ``Tensor.relu``, ``aten.relu(_)``
relu6                ``nn.ReLU6``, ``F.relu6``, ``aten.relu6``, ``nn.Hardtanh``/``F.hardtanh``
                     /``aten.hardtanh(_)`` with a lower bound of 0 (the upper bound is the cap)
maxpool              ``nn.MaxPool2d``, ``F.max_pool2d``, ``aten.max_pool2d(_with_indices)``
avgpool              ``nn.AvgPool2d``, ``F.avg_pool2d``, ``aten.avg_pool2d``
adaptive_avgpool     ``nn.AdaptiveAvgPool2d``, ``F.adaptive_avg_pool2d``, ``aten.(_)adaptive_avg_pool2d``
mean                 ``torch.mean``/``Tensor.mean``/``aten.mean.dim`` (global average pool)
add                  ``+``, ``+=``, ``torch.add``, ``Tensor.add(_)``, ``aten.add(_).Tensor``
sub, rsub, mul, div  ``-``, ``*``, ``/`` and their torch, Tensor and aten spellings: only a
                     constant scale or shift of the input (:mod:`snnc.compiler.inputxform`)
flatten              ``nn.Flatten``, ``torch.flatten``, ``view``/``reshape`` that keep the batch
identity             ``nn.Dropout*``, ``nn.Identity``, ``clone``/``contiguous``/``detach``
softmax              ``Softmax``/``LogSoftmax`` (a trailing one is dropped)
getitem              ``operator.getitem`` (the first output of a tuple-valued operator)
shape, guard         shape computations beside the data path; export's input guards
===================  ========================================================================

:func:`arguments` returns a node's arguments by name, for functions and aten operators alike.
"""

from __future__ import annotations

import builtins
import operator

import torch
import torch.nn.functional as F
from torch import nn

from .errors import describe_module

__all__ = ["kind", "arguments", "module_arguments", "TUPLE_OPS", "describe", "layer_name"]

aten = torch.ops.aten

# Argument names, in positional order, per operator spelling.
_CONV = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONVOLUTION = ("input", "weight", "bias", "stride", "padding", "dilation", "transposed",
                "output_padding", "groups")
_BN_ATEN = ("input", "weight", "bias", "running_mean", "running_var", "training", "momentum",
            "eps", "cudnn_enabled")
_BN_LEGIT = ("input", "weight", "bias", "running_mean", "running_var", "momentum", "eps")
_BN_F = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
_MAXPOOL = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_AVGPOOL = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
            "divisor_override")
_ADAPTIVE = ("input", "output_size")
_MEAN = ("input", "dim", "keepdim", "dtype")
_HARDTANH = ("input", "min_val", "max_val", "inplace")
_ADD = ("input", "other", "alpha")
_LINEAR = ("input", "weight", "bias")
_MUL = ("input", "other")
_DIV = ("input", "other", "rounding_mode")

#: call_function targets: target -> (kind, argument names).
_FUNCTIONS = {
    F.linear: ("linear", _LINEAR), aten.linear.default: ("linear", _LINEAR),
    aten.addmm.default: ("linear", ("bias", "input", "weight_t", "beta", "alpha")),
    torch.conv2d: ("conv", _CONV), aten.conv2d.default: ("conv", _CONV),
    aten.conv2d.padding: ("conv", _CONV),     # padding='same' / 'valid' (a string)
    aten.convolution.default: ("conv", _CONVOLUTION),
    F.batch_norm: ("batchnorm", _BN_F), aten.batch_norm.default: ("batchnorm", _BN_ATEN),
    aten._native_batch_norm_legit_no_training.default: ("batchnorm", _BN_LEGIT),
    F.relu: ("relu", ("input",)), torch.relu: ("relu", ("input",)),
    torch.relu_: ("relu", ("input",)), aten.relu.default: ("relu", ("input",)),
    aten.relu_.default: ("relu", ("input",)),
    F.relu6: ("relu6", ("input",)), aten.relu6.default: ("relu6", ("input",)),
    F.hardtanh: ("relu6", _HARDTANH), aten.hardtanh.default: ("relu6", _HARDTANH),
    aten.hardtanh_.default: ("relu6", _HARDTANH),
    F.max_pool2d: ("maxpool", _MAXPOOL), F.max_pool2d_with_indices: ("maxpool", _MAXPOOL),
    aten.max_pool2d.default: ("maxpool", _MAXPOOL),
    aten.max_pool2d_with_indices.default: ("maxpool", _MAXPOOL),
    F.avg_pool2d: ("avgpool", _AVGPOOL), aten.avg_pool2d.default: ("avgpool", _AVGPOOL),
    F.adaptive_avg_pool2d: ("adaptive_avgpool", _ADAPTIVE),
    aten.adaptive_avg_pool2d.default: ("adaptive_avgpool", _ADAPTIVE),
    aten._adaptive_avg_pool2d.default: ("adaptive_avgpool", _ADAPTIVE),
    torch.mean: ("mean", _MEAN), aten.mean.dim: ("mean", _MEAN),
    operator.add: ("add", _ADD), operator.iadd: ("add", _ADD), torch.add: ("add", _ADD),
    aten.add.Tensor: ("add", _ADD), aten.add_.Tensor: ("add", _ADD),
    aten.add.Scalar: ("add", _ADD),
    operator.sub: ("sub", _ADD), operator.isub: ("sub", _ADD), torch.sub: ("sub", _ADD),
    aten.sub.Tensor: ("sub", _ADD), aten.sub.Scalar: ("sub", _ADD),
    aten.rsub.Scalar: ("rsub", _ADD), aten.rsub.Tensor: ("rsub", _ADD),
    operator.mul: ("mul", _MUL), operator.imul: ("mul", _MUL), torch.mul: ("mul", _MUL),
    aten.mul.Tensor: ("mul", _MUL), aten.mul.Scalar: ("mul", _MUL),
    operator.truediv: ("div", _DIV), operator.itruediv: ("div", _DIV), torch.div: ("div", _DIV),
    torch.true_divide: ("div", _DIV), aten.div.Tensor: ("div", _DIV),
    aten.div.Scalar: ("div", _DIV), aten.div.Tensor_mode: ("div", _DIV),
    torch.flatten: ("flatten", ("input",)), torch.reshape: ("flatten", ("input",)),
    aten.flatten.using_ints: ("flatten", ("input",)), aten.view.default: ("flatten", ("input",)),
    aten.reshape.default: ("flatten", ("input",)), aten._unsafe_view.default: ("flatten", ("input",)),
    F.dropout: ("identity", ("input", "p", "training")),
    F.dropout1d: ("identity", ("input", "p", "training")),
    F.dropout2d: ("identity", ("input", "p", "training")),
    F.alpha_dropout: ("identity", ("input", "p", "training")),
    aten.dropout.default: ("identity", ("input", "p", "train")),
    aten.clone.default: ("identity", ("input",)), aten.alias.default: ("identity", ("input",)),
    aten.detach.default: ("identity", ("input",)), aten.contiguous.default: ("identity", ("input",)),
    torch.clone: ("identity", ("input",)),
    F.softmax: ("softmax", ("input", "dim")), F.log_softmax: ("softmax", ("input", "dim")),
    torch.softmax: ("softmax", ("input", "dim")), torch.log_softmax: ("softmax", ("input", "dim")),
    aten.softmax.int: ("softmax", ("input", "dim")), aten.log_softmax.int: ("softmax", ("input", "dim")),
    aten._softmax.default: ("softmax", ("input", "dim")),
    aten._log_softmax.default: ("softmax", ("input", "dim")),
    operator.getitem: ("getitem", ("input", "index")),
    aten.sym_size.int: ("shape", ()), aten.size.default: ("shape", ()),
}

#: Operators whose value is a tuple: only its first element (``[0]``) is data.
TUPLE_OPS = {aten._native_batch_norm_legit_no_training.default,
             aten.max_pool2d_with_indices.default, F.max_pool2d_with_indices}

_METHODS = {
    "relu": "relu", "relu_": "relu", "view": "flatten", "reshape": "flatten", "flatten": "flatten",
    "contiguous": "identity", "clone": "identity", "detach": "identity",
    "softmax": "softmax", "log_softmax": "softmax", "size": "shape", "dim": "shape",
    "add": "add", "add_": "add", "__add__": "add", "__iadd__": "add", "mean": "mean",
    "sub": "sub", "sub_": "sub", "mul": "mul", "mul_": "mul", "div": "div", "div_": "div",
    "true_divide": "div",
}
_METHOD_ARGS = {"add": _ADD, "add_": _ADD, "sub": _ADD, "sub_": _ADD, "mul": _MUL, "mul_": _MUL,
                "div": _DIV, "div_": _DIV, "true_divide": _DIV, "mean": _MEAN,
                "softmax": ("input", "dim")}

_MODULES = (
    (nn.Linear, "linear"), (nn.Conv2d, "conv"), (nn.BatchNorm1d, "batchnorm"),
    (nn.BatchNorm2d, "batchnorm"), (nn.ReLU, "relu"), (nn.ReLU6, "relu6"), (nn.Hardtanh, "relu6"),
    (nn.MaxPool2d, "maxpool"), (nn.AvgPool2d, "avgpool"), (nn.AdaptiveAvgPool2d, "adaptive_avgpool"),
    (nn.Flatten, "flatten"), (nn.Dropout, "identity"), (nn.Dropout1d, "identity"),
    (nn.Dropout2d, "identity"), (nn.AlphaDropout, "identity"), (nn.Identity, "identity"),
    (nn.Softmax, "softmax"), (nn.LogSoftmax, "softmax"),
)


def kind(node, gm) -> str | None:
    """The kind of a node on the data path (see the module docstring), or None if unsupported."""
    op, target = node.op, node.target
    if op == "call_module":
        if str(target).startswith("_guards"):
            return "guard"
        mod = gm.get_submodule(target)
        # Exact types: a subclass may override forward with anything.
        return next((k for cls, k in _MODULES if type(mod) is cls), None)
    if op == "call_method":
        return _METHODS.get(target)
    if op == "call_function":
        if target is builtins.getattr and node.args[1] in ("shape", "ndim"):
            return "shape"
        try:
            entry = _FUNCTIONS.get(target)
        except TypeError:  # unhashable target
            entry = None
        return entry[0] if entry else None
    return None


def arguments(node) -> dict:
    """A call_function / call_method node's arguments by name (positional and keyword)."""
    if node.op == "call_method":
        names = _METHOD_ARGS.get(node.target, ("input",))
    else:
        names = _FUNCTIONS[node.target][1]
    args = dict(zip(names, node.args))
    if len(node.args) > len(names) and node.op == "call_function":
        args["*extra"] = node.args[len(names):]
    args.update(node.kwargs)
    if "self" in args and "input" not in args:
        args["input"] = args.pop("self")
    return args


def module_arguments(mod) -> dict:
    """The same named arguments for a module call, read from the module's attributes."""
    if isinstance(mod, nn.Conv2d):
        return {"weight": mod.weight, "bias": mod.bias, "stride": mod.stride,
                "padding": mod.padding, "dilation": mod.dilation, "groups": mod.groups,
                "padding_mode": mod.padding_mode}
    if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return {"weight": mod.weight, "bias": mod.bias, "running_mean": mod.running_mean,
                "running_var": mod.running_var, "eps": mod.eps,
                "training": mod.training or mod.running_mean is None}
    if isinstance(mod, nn.MaxPool2d):
        return {"kernel_size": mod.kernel_size, "stride": mod.stride, "padding": mod.padding,
                "dilation": mod.dilation, "ceil_mode": mod.ceil_mode,
                "return_indices": mod.return_indices}
    if isinstance(mod, nn.AvgPool2d):
        return {"kernel_size": mod.kernel_size, "stride": mod.stride, "padding": mod.padding,
                "ceil_mode": mod.ceil_mode, "divisor_override": mod.divisor_override}
    if isinstance(mod, nn.AdaptiveAvgPool2d):
        return {"output_size": mod.output_size}
    if isinstance(mod, nn.ReLU6):
        return {"min_val": 0.0, "max_val": 6.0}
    if isinstance(mod, nn.Hardtanh):
        return {"min_val": mod.min_val, "max_val": mod.max_val}
    if isinstance(mod, nn.Linear):
        return {"weight": mod.weight, "bias": mod.bias}
    if isinstance(mod, (nn.Softmax, nn.LogSoftmax)):
        return {"dim": mod.dim}
    return {}


# ---------------------------------------------------------------------------------------------
# Naming nodes for error messages and layer names


def _type_name(type_str) -> str:
    """``'torch.nn.modules.rnn.LSTM'`` (or the class itself) -> ``'nn.LSTM'``."""
    if isinstance(type_str, type):
        type_str = f"{type_str.__module__}.{type_str.__qualname__}"
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


def describe(node, gm) -> str:
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


def layer_name(node, gm) -> str:
    """The model's name for the layer ``node`` belongs to (module path, else weight or node name)."""
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
        target = str(weight.target)
        return target.rsplit(".", 1)[0] if "." in target else target
    return node.name
