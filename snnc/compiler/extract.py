"""Front-end pass: turn a loaded PyTorch network into a float :class:`~snnc.compiler.floatnet.FloatNet`.

:func:`extract_layers` traces the network with :mod:`torch.fx` (an ``nn.Module`` is traced with
``torch.fx.symbolic_trace``; an ExportedProgram's ``ep.module()`` already is an fx graph of aten
operators), runs the graph once on an example input to learn every value's shape, and lowers the
data path to spiking layers, pooling layers and a readout (:mod:`snnc.compiler.fxwalk`; the
operator spellings are listed in :mod:`snnc.compiler.fxops`):

- ``nn.Conv2d`` (groups 1, dilation 1, kernel up to 7x7, any stride, symmetric zero padding,
  ``padding='same'`` with an odd kernel and stride 1) and
  ``nn.Linear`` are the linear operators; ``nn.BatchNorm1d/2d`` after one is folded into it;
- ``nn.ReLU`` (and ``F.relu``, ``torch.relu``) after a linear operator makes a spiking layer;
  ``nn.ReLU6`` too, with its activation scale capped at 6;
- ``nn.MaxPool2d`` and ``nn.AvgPool2d`` with stride = kernel and no padding,
  ``nn.AdaptiveAvgPool2d`` and ``mean`` over (H, W) when the windows divide the map evenly;
- residual additions (``x + f(x)``, ``torch.add``, ``out += x``) followed by a ReLU;
- ``nn.Flatten``/``view``/``reshape`` of each sample, ``nn.Dropout`` and a trailing
  ``Softmax``/``LogSoftmax`` over the classes are removed;
- the last linear operator's output is the readout;
- a constant scale and shift of the input before the first layer (``x / 255``,
  ``(x - mean) / std``) becomes the FloatNet's ``input_transform`` and folds into the input
  quantization (:mod:`snnc.compiler.inputxform`).

Anything else raises :class:`SnncError` naming the operator and the layer it belongs to, e.g.
"nn.LSTM at 'rnn' is not supported: snnc compiles feed-forward convolutional and linear
networks (...)". A ReLU after the last linear layer is rejected (not silently dropped): it changes
the prediction whenever every logit is negative. NaN or inf parameters, buffers or constants are
rejected before anything runs, naming the layer. The extracted network is checked against the
model's own output on the example input.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from . import fxops
from .errors import SnncError, describe_module
from .floatnet import FloatNet
from .fxwalk import ANN, SUPPORTED, walk
from .inputxform import find_input_transform, reshape_transform

__all__ = ["extract_layers", "SUPPORTED"]

aten = torch.ops.aten


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
    """``in_features`` of the first layer if it is a Linear (None if it is anything else)."""
    for node in gm.graph.nodes:
        kind = fxops.kind(node, gm) if node.op.startswith("call_") else None
        if kind == "conv":
            return None
        if kind != "linear":
            continue
        if node.op == "call_module":
            return gm.get_submodule(node.target).in_features
        w = node.args[2] if node.target is aten.addmm.default else node.args[1]
        if getattr(w, "op", None) == "get_attr":
            t = _attr(gm, w.target)
            return t.shape[0] if node.target is aten.addmm.default else t.shape[1]
        return None
    return None


def _reject_unsupported_modules(gm) -> None:
    """Name the first unsupported submodule call (when there is no input shape to run with)."""
    for node in gm.graph.nodes:
        if node.op == "call_module" and fxops.kind(node, gm) is None:
            raise SnncError(f"{fxops.describe(node, gm)} is not supported: {ANN}")


def _attr(gm, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _check_finite(gm) -> None:
    """Every parameter, buffer and constant tensor the graph uses must be finite (a NaN weight
    would otherwise surface as a confusing mismatch with the model's output)."""
    tensors = dict(gm.named_parameters())
    tensors.update(gm.named_buffers())
    for node in gm.graph.nodes:
        if node.op == "get_attr" and str(node.target) not in tensors:
            value = _attr(gm, node.target)
            if isinstance(value, torch.Tensor):
                tensors[str(node.target)] = value
    for name, t in tensors.items():
        if not t.is_floating_point():
            continue
        bad = int((~torch.isfinite(t.detach())).sum())
        if bad:
            layer, _, what = name.rpartition(".")
            where = f"layer '{layer}'" if layer else f"the model's tensor '{name}'"
            raise SnncError(f"{where} has {bad} NaN/inf {what} value{'s' * (bad != 1)}: the model "
                            "file is corrupt or training diverged; fix the weights")


def _check_folded(net: FloatNet) -> None:
    """Folding (BatchNorm) must leave every weight and bias finite."""
    for node in net.nodes:
        arrays = [getattr(node, "bias", np.zeros(0))]
        arrays += [t.weight for t in getattr(node, "terms", ())]
        if not all(np.isfinite(a).all() for a in arrays):
            raise SnncError(f"layer '{node.name}' has NaN/inf weights or biases after folding its "
                            "BatchNorm (a negative running_var?): fix the model's statistics")


def _run(gm, example, hint: str) -> dict:
    rec = _Recorder(gm)
    try:
        with torch.no_grad():
            rec.run(example)
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SnncError(f"running the model on an example input of shape "
                        f"{list(example.shape)} failed ({type(exc).__name__}: {msg}); check "
                        f"{hint}") from None
    return rec.values



# ---------------------------------------------------------------------------------------------
# Extraction


def extract_layers(module, input_shape=None, data_shape=None) -> FloatNet:
    """Extract the float network from an ``nn.Module`` or an ExportedProgram's ``ep.module()``.

    Parameters
    ----------
    module : torch.nn.Module or torch.fx.GraphModule
    input_shape : tuple of int, optional
        Per-sample input shape (``--input-shape``). Default: the shape stored in an exported
        graph's example input (which wins over ``input_shape``: a different ``input_shape`` of
        the same size is ignored with a warning), else ``(in_features,)`` of the first Linear,
        else ``data_shape``.
    data_shape : tuple of int, optional
        Per-sample shape of the calibration data, the last resort.

    Returns
    -------
    FloatNet
        ``warnings`` lists what the user should know (an ignored ``input_shape``).

    Raises
    ------
    SnncError
        For unsupported operators or structure, naming the layer and what to do.
    """
    gm = _trace(module)
    where = describe_module(module)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        names = ", ".join(str(n.target) for n in placeholders)
        who = ("the exported model" if isinstance(module, torch.fx.GraphModule)
               and any("val" in n.meta for n in placeholders) else where)
        raise SnncError(f"{who}'s forward takes {len(placeholders)} inputs ({names}); snnc "
                        "compiles networks with a single input tensor")
    warnings, hint = [], "--input-shape (the per-sample shape, without the batch axis)"
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
        if input_shape is not None and tuple(input_shape) != tuple(example_shape[1:]):
            warnings.append(f"--input-shape {list(input_shape)} is ignored: the exported model "
                            f"stores its input's per-sample shape {list(example_shape[1:])}, "
                            "which snnc uses (data may be given in either shape)")
    else:
        if input_shape is None:
            n = _first_linear_features(gm)
            if n is not None:
                input_shape = (n,)
            elif data_shape is not None:
                input_shape = tuple(int(d) for d in data_shape)
                hint = (f"--input-shape (the per-sample shape, without the batch axis; "
                        f"{list(input_shape)} was taken from the calibration data)")
            else:
                _reject_unsupported_modules(gm)
                raise SnncError(f"cannot tell {where}'s input shape: pass --input-shape")
        example_shape = (2, *input_shape)
    if any(d < 1 for d in example_shape):
        raise SnncError(f"invalid input shape {list(example_shape[1:])}")
    _check_finite(gm)
    gen = torch.Generator().manual_seed(0)
    example = torch.rand(example_shape, generator=gen).to(_example_dtype(gm))
    values = _run(gm, example, hint)
    folded, transform = find_input_transform(gm, values, tuple(example_shape[1:]))
    net = walk(gm, values, tuple(example_shape[1:]), folded)
    if transform is not None:
        net = dataclasses.replace(net, input_transform=reshape_transform(
            transform, example_shape[1:], net.input_shape))
    _check_folded(net)
    _check_against_model(net, gm, values, example)
    return dataclasses.replace(net, warnings=net.warnings + tuple(warnings))


def _check_against_model(net: FloatNet, gm, values, example) -> None:
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
                        f"uses an operation snnc does not understand: {ANN}")
