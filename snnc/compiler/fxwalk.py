"""Lower a torch.fx graph (with every node's recorded value) to :class:`FloatNet` nodes.

The walk visits the graph in order and gives every data-path node one of three values:

- ``_Pop``: the output of a spiking layer, a pooling layer or the input (spikes on the chip);
- ``_Pre``: a layer's input current, ``bias + sum of linear terms`` of earlier ``_Pop`` values:
  what a Conv2d or Linear produces, with BatchNorm folded in and residual additions merged;
  a ReLU turns it into a spiking :class:`Layer`, and the model's output into the readout;
- ``_Tuple``: a tuple-valued operator (batch norm, max pool with indices) before its ``[0]``.

Rewrites that keep the float network exact: BatchNorm after a linear operator is folded into
it; a max pool before the ReLU is moved after it (``relu(max(z)) = max(relu(z))``); an average
pool of a convolution's output becomes one larger strided convolution; a flatten or view only
changes how later operators see a value.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from . import fxops
from .errors import SnncError
from .floatnet import INPUT, FloatNet, Layer, Pool, Term, avgpool_after_conv, fold_batchnorm

__all__ = ["walk", "SUPPORTED", "ANN"]

#: The layer kinds named in error messages.
SUPPORTED = ("nn.Conv2d, nn.Linear, nn.BatchNorm1d/2d, nn.ReLU/ReLU6, nn.MaxPool2d, nn.AvgPool2d, "
             "nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, residual additions")
ANN = f"snnc compiles feed-forward convolutional and linear networks ({SUPPORTED})"
MAX_KERNEL = 7


@dataclass(frozen=True)
class _Pop:
    name: str
    view: tuple
    desc: str


@dataclass(frozen=True, eq=False)
class _Pre:
    name: str
    terms: tuple
    bias: np.ndarray
    shape: tuple
    view: tuple
    desc: str
    maxpool: tuple | None = None      # (kernel, description, name) of a max pool before the ReLU


@dataclass(frozen=True)
class _Tuple:
    value: object


def _pair(v) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        v = tuple(int(x) for x in v)
        return v * 2 if len(v) == 1 else v
    return (int(v), int(v))


class _Walker:
    def __init__(self, gm, values, input_shape, folded=None):
        self.gm, self.values = gm, values
        self.folded = dict(folded or {})
        self.input_shape = tuple(input_shape)
        self.input_view = None
        self.nodes, self.names = [], {INPUT}
        self.vals, self.dropped, self.final, self.ended = {}, [], None, None

    # -- helpers --------------------------------------------------------------------------

    def desc(self, node) -> str:
        return fxops.describe(node, self.gm)

    def unique(self, name: str) -> str:
        base, k, out = name, 1, name
        while out in self.names:
            k += 1
            out = f"{base}_{k}"
        self.names.add(out)
        return out

    def shape_of(self, name: str) -> tuple:
        if name == INPUT:
            return self.input_view or self.input_shape
        return next(n.shape for n in self.nodes if n.name == name)

    def param(self, v):
        """A constant argument as float64 numpy (None stays None)."""
        if v is None:
            return None
        if isinstance(v, torch.fx.Node):
            v = self.values[v]
        if isinstance(v, torch.Tensor):
            return v.detach().to(torch.float64).cpu().numpy().copy()
        return v

    def operand(self, node, arg):
        if not isinstance(arg, torch.fx.Node) or arg not in self.vals:
            raise SnncError(f"{self.desc(node)} is not applied to the previous layer's output: "
                            f"{ANN}")
        return self.vals[arg]

    def add_node(self, node):
        self.nodes.append(node)
        return node

    def chain_error(self, node, pre: _Pre):
        if pre.maxpool is not None:
            return SnncError(f"{pre.maxpool[1]} comes before a ReLU and is followed by "
                             f"{self.desc(node)}: put the max pool after the ReLU")
        if pre.desc.startswith("the addition"):
            return SnncError(f"{pre.desc} is followed by {self.desc(node)} without a ReLU: snnc "
                             "adds residual branches in a layer's input, so a ReLU must follow "
                             "the addition")
        return SnncError(f"{pre.desc} is followed directly by {self.desc(node)} without a ReLU; "
                         "fold them into one layer or add nn.ReLU between them")

    def source(self, node, x, want_3d: bool) -> _Pop:
        """``x`` as the source of a linear operator (a _Pop with the view the operator needs)."""
        if isinstance(x, _Pre):
            raise self.chain_error(node, x)
        if isinstance(x, _Tuple):
            raise SnncError(f"{self.desc(node)} receives a tuple: {ANN}")
        if not want_3d:
            if len(x.view) != 1:
                raise SnncError(f"{self.desc(node)} receives a {len(x.view) + 1}-D input of shape "
                                f"{['B', *x.view]}; snnc needs (batch, features) here: add "
                                "nn.Flatten() before it")
            return x
        if len(x.view) != 3:
            raise SnncError(f"{self.desc(node)} needs a (batch, C, H, W) input, not "
                            f"{['B', *x.view]}")
        if x.name == INPUT and x.view != self.shape_of(INPUT):
            if self.input_view is not None:
                raise SnncError(f"{self.desc(node)} views the model's input as {list(x.view)}, "
                                f"another layer as {list(self.input_view)}")
            self.input_view = x.view
        elif x.view != self.shape_of(x.name):
            raise SnncError(f"{self.desc(node)} sees the output of '{x.name}' reshaped from "
                            f"{list(self.shape_of(x.name))} to {list(x.view)}; snnc convolves and "
                            "pools feature maps in their own (C, H, W) layout")
        return x

    # -- linear operators --------------------------------------------------------------------

    def linear(self, node, a):
        x = self.source(node, self.operand(node, a["input"]), want_3d=False)
        if node.op == "call_function" and node.target is torch.ops.aten.addmm.default:
            if a.get("beta", 1) != 1 or a.get("alpha", 1) != 1:
                raise SnncError(f"{self.desc(node)}: addmm with beta/alpha != 1 is not supported")
            w = self.param(a["weight_t"]).T
        else:
            w = self.param(a["weight"])
        b = self.param(a.get("bias"))
        b = np.zeros(w.shape[0]) if b is None else b.reshape(-1)
        if b.shape != (w.shape[0],):
            raise SnncError(f"{self.desc(node)}: bias of shape {list(b.shape)} does not match "
                            f"{w.shape[0]} outputs")
        return _Pre(fxops.layer_name(node, self.gm), (Term(x.name, w),), b, (w.shape[0],),
                    (w.shape[0],), self.desc(node))

    def conv(self, node, a):
        where = self.desc(node)
        if a.get("padding_mode", "zeros") != "zeros":
            raise SnncError(f"{where} uses padding_mode='{a['padding_mode']}': snnc supports zero "
                            "padding only")
        if a.get("transposed", False):
            raise SnncError(f"{where} is a transposed convolution: {ANN}")
        if a.get("groups", 1) != 1:
            raise SnncError(f"{where} has groups={a['groups']}: snnc supports groups=1 (a full "
                            "kernel); use a plain convolution")
        if _pair(a.get("dilation", 1)) != (1, 1):
            raise SnncError(f"{where} has dilation={_pair(a['dilation'])}: snnc "
                            "supports dilation 1")
        w = self.param(a["weight"])
        if w.ndim != 4:
            raise SnncError(f"{where} is not a 2-D convolution: {ANN}")
        kh, kw = w.shape[2:]
        if max(kh, kw) > MAX_KERNEL:
            raise SnncError(f"{where} has a {kh}x{kw} kernel: snnc supports kernels up to "
                            f"{MAX_KERNEL}x{MAX_KERNEL}")
        stride = _pair(a.get("stride", 1))
        pad = a.get("padding", 0)
        if pad == "valid":
            pad = (0, 0)
        elif pad == "same":
            pad = ((kh - 1) // 2, (kw - 1) // 2)
            if kh % 2 == 0 or kw % 2 == 0 or stride != (1, 1):
                raise SnncError(f"{where} uses padding='same' with a {kh}x{kw} kernel and stride "
                                f"{list(stride)}: torch pads an even kernel asymmetrically, and "
                                "snnc supports symmetric zero padding only (odd kernels, stride "
                                "1); give explicit padding numbers instead, e.g. padding="
                                f"{(kh - 1) // 2}")
        pad = _pair(pad)
        if pad[0] >= kh or pad[1] >= kw:
            raise SnncError(f"{where} pads by {pad} with a {kh}x{kw} kernel: snnc needs "
                            "padding smaller than the kernel")
        x = self.source(node, self.operand(node, a["input"]), want_3d=True)
        term = Term(x.name, w, stride, pad)
        shape = term.out_shape(x.view)
        got = tuple(self.values[node].shape[1:])
        if shape != got:
            raise SnncError(f"{where}: output shape {list(got)} is not {list(shape)}: {ANN}")
        b = self.param(a.get("bias"))
        b = np.zeros(shape[0]) if b is None else b.reshape(-1)
        return _Pre(fxops.layer_name(node, self.gm), (term,), np.repeat(b, shape[1] * shape[2]),
                    shape, shape, where)

    def batchnorm(self, node, a):
        where = self.desc(node)
        if a.get("training", False) or a.get("running_mean") is None:
            raise SnncError(f"{where} uses batch statistics (training mode, or "
                            "track_running_stats=False): call model.eval() before exporting, "
                            "with running statistics")
        x = self.operand(node, a["input"])
        if not isinstance(x, _Pre) or x.maxpool is not None:
            what = x.desc if isinstance(x, (_Pop, _Pre)) else "a tuple"
            raise SnncError(f"{where} follows {what}, not a convolution or linear layer: snnc folds "
                            "BatchNorm into the preceding nn.Conv2d or nn.Linear")
        channels = x.view[0]
        if any(t.conv for t in x.terms) and x.shape[0] != channels:
            raise SnncError(f"{where} normalizes a reshaped convolution output: {ANN}")
        mean, var = self.param(a["running_mean"]), self.param(a["running_var"])
        gamma, beta = self.param(a.get("weight")), self.param(a.get("bias"))
        eps = float(a.get("eps", 1e-5))
        with np.errstate(invalid="ignore"):     # a negative variance: see extract's check
            scale = (np.ones(channels) if gamma is None else gamma) / np.sqrt(var + eps)
        shift = (np.zeros(channels) if beta is None else beta) - mean * scale
        terms, bias = fold_batchnorm(x.terms, x.bias, x.view, scale, shift)
        out = replace(x, terms=terms, bias=bias, desc=where)
        self.dropped.append(f"{where} (folded into the weights)")
        return _Tuple(out) if node.op == "call_function" and node.target in fxops.TUPLE_OPS else out

    # -- activations and pooling ---------------------------------------------------------------

    def relu(self, node, a, cap=None):
        x = self.operand(node, a["input"])
        where = self.desc(node)
        if isinstance(x, _Tuple):
            raise SnncError(f"{where} receives a tuple: {ANN}")
        if isinstance(x, _Pop):
            if x.name == INPUT:
                raise SnncError(f"the ReLU at '{fxops.layer_name(node, self.gm)}' comes before the "
                                "first nn.Linear or nn.Conv2d; snnc networks start with one of "
                                "them (after an optional nn.Flatten)")
            if cap is not None:
                raise SnncError(f"{where} follows {x.desc}: apply the ReLU6 directly to the "
                                "convolution or linear layer's output")
            self.dropped.append(f"{where} (a ReLU of a non-negative value)")
            return x
        layer = self.add_node(Layer(self.unique(x.name), x.shape, x.terms, x.bias, True, cap))
        if x.maxpool is None:
            return _Pop(layer.name, x.view, f"a ReLU after {x.desc}")
        k, pool_desc, pool_name = x.maxpool
        pool = self.add_node(Pool(self.unique(pool_name), _pooled(layer.shape, k), layer.name,
                                  "max", k))
        return _Pop(pool.name, x.view, pool_desc)

    def relu6(self, node, a):
        lo, hi = float(a.get("min_val", 0.0)), float(a.get("max_val", 6.0))
        if lo != 0.0 or hi <= 0.0:
            raise SnncError(f"{self.desc(node)} clips to [{lo}, {hi}]: snnc supports ReLU and "
                            "ReLU6-like clipping to [0, max] with max > 0")
        return self.relu(node, a, cap=hi)

    def _pool_params(self, node, a, what: str):
        where = self.desc(node)
        k = _pair(a["kernel_size"])
        stride = a.get("stride")
        stride = k if stride is None or stride == [] or stride == () else _pair(stride)
        if stride != k:
            raise SnncError(f"{where} has stride {stride} and kernel {k}: snnc supports "
                            f"{what} with stride equal to the kernel")
        pad = _pair(a.get("padding", 0))
        if pad != (0, 0):
            raise SnncError(f"{where} pads by {pad}: snnc supports {what} without padding")
        if a.get("ceil_mode", False):
            raise SnncError(f"{where} uses ceil_mode=True: snnc supports floor mode only")
        if max(k) > MAX_KERNEL:
            raise SnncError(f"{where} has a {k[0]}x{k[1]} window: snnc supports windows up to "
                            f"{MAX_KERNEL}x{MAX_KERNEL}")
        return k

    def maxpool(self, node, a):
        where = self.desc(node)
        k = self._pool_params(node, a, "max pooling")
        if _pair(a.get("dilation", 1)) != (1, 1):
            raise SnncError(f"{where} has dilation {a['dilation']}: snnc supports dilation 1")
        if k[0] != k[1]:
            raise SnncError(f"{where} has a {k[0]}x{k[1]} window: snnc max-pools square windows")
        x = self.operand(node, a["input"])
        view = tuple(self.values[node][0].shape[1:] if isinstance(self.values[node], tuple)
                     else self.values[node].shape[1:])
        name = fxops.layer_name(node, self.gm)
        if isinstance(x, _Pre) and x.maxpool is None and x.view == x.shape and len(x.shape) == 3:
            out = replace(x, view=view, maxpool=(k, where, name))
        else:
            x = self._pool_source(node, x)
            pool = self.add_node(Pool(self.unique(name), _pooled(self.shape_of(x.name), k), x.name,
                                      "max", k))
            out = _Pop(pool.name, view, where)
        tuple_out = (node.op == "call_function" and node.target in fxops.TUPLE_OPS) or \
            a.get("return_indices", False)
        return _Tuple(out) if tuple_out else out

    def _pool_source(self, node, x) -> _Pop:
        if isinstance(x, _Pop) and x.name == INPUT:
            raise SnncError(f"{self.desc(node)} pools the model's input: snnc pools the outputs "
                            "of spiking layers; downsample the data before it reaches the model")
        return self.source(node, x, want_3d=True)

    def avgpool(self, node, a, k=None):
        where = self.desc(node)
        if k is None:
            k = self._pool_params(node, a, "average pooling")
            if a.get("divisor_override") is not None:
                raise SnncError(f"{where} has divisor_override={a['divisor_override']}: snnc "
                                "supports plain averages")
        x = self.operand(node, a["input"])
        view = tuple(self.values[node].shape[1:])
        if isinstance(x, _Pre) and x.maxpool is None:
            return self._avgpool_pre(node, x, k, view)
        x = self._pool_source(node, x)
        pool = self.add_node(Pool(self.unique(fxops.layer_name(node, self.gm)),
                                  _pooled(self.shape_of(x.name), k), x.name, "avg", k))
        return _Pop(pool.name, view, where)

    def _avgpool_pre(self, node, x: _Pre, k, view):
        """An average pool of a convolution's output (before the ReLU): one strided convolution."""
        if not all(t.conv for t in x.terms) or x.view != x.shape:
            raise SnncError(f"{self.desc(node)} follows {x.desc}: put the average pool after "
                            "the ReLU")
        terms = tuple(avgpool_after_conv(t, k) for t in x.terms)
        if any(max(t.weight.shape[2:]) > MAX_KERNEL for t in terms):
            raise SnncError(f"{self.desc(node)} after {x.desc} would need a kernel larger than "
                            f"{MAX_KERNEL}x{MAX_KERNEL}: put the average pool after the ReLU")
        bias = F.avg_pool2d(torch.from_numpy(x.bias.reshape(1, *x.shape)), k, k)
        shape = tuple(bias.shape[1:])
        self.dropped.append(f"{self.desc(node)} (merged into {x.desc})")
        return replace(x, terms=terms, bias=bias.numpy().reshape(-1), shape=shape, view=view)

    def adaptive_avgpool(self, node, a):
        x = self.operand(node, a["input"])
        if isinstance(x, _Tuple) or len(x.view) != 3:
            raise SnncError(f"{self.desc(node)} needs a (batch, C, H, W) input")
        size = a["output_size"]
        size = (size, size) if not isinstance(size, (list, tuple)) else tuple(size)
        (_, h, w) = x.view
        oh, ow = (h if size[0] is None else int(size[0])), (w if size[-1] is None else int(size[-1]))
        if h % oh or w % ow:
            raise SnncError(f"{self.desc(node)} maps {h}x{w} to {oh}x{ow}: snnc supports it only "
                            "when the output size divides the input (equal, non-overlapping "
                            "windows)")
        return self._checked_avgpool(node, a, (h // oh, w // ow))

    def mean(self, node, a):
        x = self.operand(node, a["input"])
        dims = a.get("dim")
        dims = [dims] if isinstance(dims, int) else list(dims or [])
        if isinstance(x, _Tuple) or len(x.view) != 3 or sorted(d % 4 for d in dims) != [2, 3]:
            raise SnncError(f"{self.desc(node)} is not a global average pool over H and W: {ANN}")
        return self._checked_avgpool(node, a, x.view[1:])

    def _checked_avgpool(self, node, a, k):
        if max(k) > MAX_KERNEL:
            raise SnncError(f"{self.desc(node)} averages {k[0]}x{k[1]} windows: snnc supports "
                            f"windows up to {MAX_KERNEL}x{MAX_KERNEL}")
        return self.avgpool(node, a, k=k)

    # -- structure -----------------------------------------------------------------------------

    def arith(self, node, a):
        """``+ - * /`` that did not fold into the input transform: always an error."""
        where = self.desc(node)
        data = [v for v in (a.get("input"), a.get("other"))
                if isinstance(v, torch.fx.Node) and v in self.vals]
        if len(data) == 2:
            raise SnncError(f"{where} combines two values computed from the input (like x * x): "
                            "snnc folds only a constant scale or shift of the input (x / 255, "
                            f"(x - mean) / std) into the input quantization; {ANN}")
        x = self.vals[data[0]] if data else None
        if isinstance(x, _Pop) and x.name == INPUT:
            raise SnncError(f"{where} scales or shifts the model's input in a way snnc cannot fold "
                            "into the input quantization x' = (x - offset) * gain: it folds "
                            "+, -, * and / by constants (numbers, or tensors that broadcast over "
                            "one sample, like a (C, 1, 1) mean) applied to the input before "
                            "anything else reads it; otherwise normalize the data before it "
                            "reaches the model")
        what = "adds a constant to" if node.op != "call_module" and \
            fxops.kind(node, self.gm) == "add" else "scales or shifts"
        raise SnncError(f"{where} {what} a layer's output: {ANN}")

    sub = rsub = mul = div = arith

    def add(self, node, a):
        where = self.desc(node)
        if a.get("alpha", 1) != 1:
            raise SnncError(f"{where} scales a branch (alpha={a['alpha']}): {ANN}")
        data = [v for v in (a.get("input"), a.get("other"))
                if isinstance(v, torch.fx.Node) and v in self.vals]
        if len(data) != 2:
            return self.arith(node, a)
        other = a.get("other")
        xs = [self.operand(node, a["input"]), self.vals[other]]
        if any(isinstance(x, _Tuple) or (isinstance(x, _Pre) and x.maxpool) for x in xs):
            raise SnncError(f"{where} adds a max pool's input or a tuple: {ANN}")
        if xs[0].view != xs[1].view:
            raise SnncError(f"{where} adds shapes {list(xs[0].view)} and {list(xs[1].view)}: snnc "
                            "adds branches of the same shape (no broadcasting)")
        pres = [x for x in xs if isinstance(x, _Pre)]
        pops = [x for x in xs if isinstance(x, _Pop)]
        conv_shapes = {t.out_shape(self.shape_of(t.src)) for p in pres for t in p.terms if t.conv}
        if len(conv_shapes) > 1:
            raise SnncError(f"{where} adds convolution outputs of shapes {sorted(conv_shapes)}")
        if conv_shapes:
            shape = conv_shapes.pop()
        elif pres:
            shape = pres[0].shape
        else:
            shape = self.shape_of(pops[0].name)
        terms, bias = [], np.zeros(int(np.prod(xs[0].view)))
        for x in xs:
            if isinstance(x, _Pre):
                terms.extend(x.terms)
                bias = bias + x.bias
            else:
                terms.append(_identity(x, self.shape_of(x.name), shape))
        terms = self._merge(node, terms)
        name = pres[0].name if pres else fxops.layer_name(node, self.gm)
        return _Pre(name, tuple(terms), bias, shape, xs[0].view, f"the addition {where}")

    def _merge(self, node, terms):
        out = {}
        for t in terms:
            if t.src not in out:
                out[t.src] = t
                continue
            u = out[t.src]
            if t.weight.shape != u.weight.shape or t.stride != u.stride or t.padding != u.padding:
                raise SnncError(f"{self.desc(node)} adds two branches that read '{t.src}' in "
                                "different ways: snnc connects two layers at most once")
            out[t.src] = replace(u, weight=u.weight + t.weight, identity=u.identity and t.identity)
        return list(out.values())

    def flatten(self, node, a):
        x = self.operand(node, a["input"])
        src, out = self.values[a["input"]], self.values[node]
        if isinstance(x, _Tuple) or not (out.ndim >= 2 and out.shape[0] == src.shape[0]
                                         and out.numel() == src.numel()):
            raise SnncError(f"{self.desc(node)} reshapes {list(src.shape)} to {list(out.shape)}; "
                            "snnc only supports flattening each sample to (batch, features)")
        if out.shape != src.shape:
            self.dropped.append(self.desc(node))
        return replace(x, view=tuple(out.shape[1:]))

    def identity(self, node, a):
        if a.get("training", False) or a.get("train", False):
            raise SnncError(f"{self.desc(node)} was exported in training mode: call model.eval() "
                            "before torch.export.export")
        self.dropped.append(self.desc(node))
        return self.operand(node, a["input"])

    def softmax(self, node, a):
        x = self.operand(node, a["input"])
        ndim = len(x.view) + 1
        dim = a.get("dim")
        if dim is None:  # legacy implicit dim: 1 for 2-D inputs
            dim = 0 if ndim in (0, 1, 3) else 1
        if dim % ndim != ndim - 1:
            raise SnncError(f"{self.desc(node)} is not taken over the class axis")
        self.ended = self.desc(node)
        is_log = "log" in (node.target if node.op == "call_method" else
                           type(self.gm.get_submodule(node.target)).__name__.lower()
                           if node.op == "call_module" else fxops._fn_name(node.target))
        self.final = "log_softmax" if is_log else "softmax"
        self.dropped.append(self.ended)
        return x

    def getitem(self, node, a):
        x = self.operand(node, a["input"])
        if not isinstance(x, _Tuple) or a.get("index") != 0:
            raise SnncError(f"{self.desc(node)} takes part of a layer's output: {ANN}")
        return x.value

    # -- the walk -------------------------------------------------------------------------------

    def args(self, node) -> dict:
        if node.op == "call_module":
            a = fxops.module_arguments(self.gm.get_submodule(node.target))
            a["input"] = node.args[0] if node.args else node.kwargs.get("input")
            return a
        return fxops.arguments(node)

    def visit(self, node, kind):
        a = self.args(node)
        data = {"input", "other"}
        for key, v in a.items():
            if key not in data and isinstance(v, torch.fx.Node) and v in self.vals:
                raise SnncError(f"{self.desc(node)} uses a layer's output as its {key}: {ANN}")
        if kind != "getitem" and any(isinstance(self.vals.get(a.get(key)), _Tuple)
                                     for key in data if isinstance(a.get(key), torch.fx.Node)):
            raise SnncError(f"{self.desc(node)} receives a tuple (an operator with several "
                            f"outputs, not followed by [0]): {ANN}")
        if self.ended is not None and kind != "identity":
            raise SnncError(f"{self.desc(node)} follows the final {self.ended}: only the class "
                            "scores' softmax may end the network")
        return getattr(self, kind)(node, a)

    def run(self, placeholder) -> FloatNet:
        self.vals[placeholder] = _Pop(INPUT, self.input_shape, "the model's input")
        shape_nodes = set()
        for node in self.gm.graph.nodes:
            if node.op in ("placeholder", "get_attr"):
                continue
            if node.op == "output":
                return self.finish(node)
            if not any(n in self.vals for n in node.all_input_nodes):
                if any(n in shape_nodes for n in node.all_input_nodes):
                    shape_nodes.add(node)
                continue
            if node in self.folded:      # a constant scale or shift of the input
                self.vals[node] = self.vals[self.folded[node]]
                self.dropped.append(f"{self.desc(node)} (folded into the input quantization)")
                continue
            kind = fxops.kind(node, self.gm)
            if kind is None:
                raise SnncError(f"{self.desc(node)} is not supported: {ANN}")
            if kind == "guard":
                continue
            if kind == "shape":
                shape_nodes.add(node)
                continue
            self.vals[node] = self.visit(node, kind)
        raise SnncError("the model's graph has no output")

    def finish(self, node) -> FloatNet:
        outs = torch.fx.node.map_arg(node.args[0], lambda n: n)
        outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
        if len(outs) != 1 or outs[0] not in self.vals:
            raise SnncError(f"the model must return exactly one tensor, the class scores; it "
                            f"returns {len(outs)} value(s)")
        x = self.vals[outs[0]]
        if isinstance(x, _Tuple):
            raise SnncError("the model must return exactly one tensor, the class scores")
        if isinstance(x, _Pop):
            if x.name == INPUT:
                raise SnncError(f"the model has no nn.Linear or nn.Conv2d layer: {ANN}")
            raise SnncError(f"the network ends with {x.desc}; remove it: snnc's readout integrates "
                            "the last linear layer's output and predicts its argmax")
        if x.maxpool is not None:
            raise SnncError(f"the network ends with {x.maxpool[1]}: the readout must be the "
                            "output of a linear layer")
        if len(x.view) != 1:
            raise SnncError(f"the model returns shape {['B', *x.view]}; snnc needs class scores "
                            "of shape (batch, classes)")
        self.add_node(Layer(self.unique(x.name), x.shape, x.terms, x.bias, relu=False))
        return FloatNet(self.input_view or self.input_shape, _reachable(self.nodes),
                        tuple(self.dropped), self.final)


def _pooled(shape, k) -> tuple:
    c, h, w = shape
    return (c, h // k[0], w // k[1])


def _identity(x: _Pop, src_shape, dst_shape) -> Term:
    """The shortcut ``x`` as a term: a 1x1 diagonal kernel between equal feature maps, else a
    diagonal matrix."""
    n = int(np.prod(src_shape))
    if len(src_shape) == 3 and tuple(src_shape) == tuple(dst_shape):
        c = src_shape[0]
        return Term(x.name, np.eye(c).reshape(c, c, 1, 1), identity=True)
    return Term(x.name, np.eye(n), identity=True)


def _reachable(nodes) -> tuple:
    """The nodes the readout (the last node) depends on, in order."""
    by_name = {n.name: n for n in nodes}
    need, stack = set(), [nodes[-1].name]
    while stack:
        name = stack.pop()
        if name in need or name not in by_name:
            continue
        need.add(name)
        node = by_name[name]
        stack.extend([node.src] if isinstance(node, Pool) else [t.src for t in node.terms])
    return tuple(n for n in nodes if n.name in need)


def walk(gm, values, input_shape, folded=None) -> FloatNet:
    """Lower the traced graph ``gm`` (``values``: every node's value on an example input).

    ``folded`` maps the nodes of the input transform to their input (they pass it through;
    :func:`snnc.compiler.inputxform.find_input_transform`)."""
    placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
    return _Walker(gm, values, input_shape, folded).run(placeholder)
