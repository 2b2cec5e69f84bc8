"""Quantization-aware fine-tuning (QAT) for low-bit SNN weights, above all 2-bit (ternary).

Quantizing a trained CNN's weights to ternary after training loses a lot (the digits CNN drops
from about 99% to about 60% as an SNN). :func:`finetune` trains the network with the quantizers
in the loop, so that the weights it returns already lie on the grid ``snnc compile`` uses:

1. **BN folding.** Every ``Conv2d -> BatchNorm2d`` pair is folded (``torch.fx`` tracing, eval-mode
   statistics), because the compiler folds BN before it quantizes and a per-channel BN scale
   would move the weights off a per-layer grid.
2. **Weights.** Each ``Conv2d``/``Linear`` weight is fake-quantized per layer with a
   straight-through estimator: ternary weights (``bits=2``) use the TWN rule (Li & Liu 2016,
   threshold ``0.7 * mean|W|``, scale = mean magnitude above it), which is stable from step to
   step; 4 and 8 bits use the compiler's own MSE-chosen scale
   (:func:`snnc.compiler.quantize.quantize_weights`).
3. **Activations.** Each ReLU's output is fake-quantized as the SNN represents it: clipped at the
   layer's ``percentile`` activation ``lambda`` (computed over the whole training set at the
   start of every epoch, as ``snnc compile`` calibrates) and floored to ``levels = timesteps *
   max_strength`` steps, the number of strength units a neuron can emit in ``T`` timesteps.
4. **Distillation.** The loss mixes cross-entropy with the float model's softened outputs
   (``distill`` weight, temperature 2): a small ternary network learns faster from the teacher.

The result is a BN-free ``torch.fx.GraphModule`` whose weights are exactly ``scale * k`` with
integer ``|k| <= 2**(bits-1) - 1`` per layer; export it (for example with
:func:`snnc.models.digits_cnn.export_cnn` or ``torch.export``) and compile it at the same bits.
For a layer with a single input the compiler's MSE scale search then recovers exactly these
integers (its first candidate scale, ``max|W| / q``, has zero error).

Everything runs on the CPU on one thread and is deterministic for a given ``seed``.
"""

from __future__ import annotations

import copy
import sys
import warnings

import numpy as np
import torch
from torch import fx, nn
from torch.nn.utils import parametrize
from tqdm import tqdm

from ..compiler.errors import SnncError
from ..compiler.quantize import quantize_weights
from ..ir import WEIGHT_BITS
from .digits import one_thread

__all__ = ["finetune", "prepare", "strip", "recalibrate", "WeightQuant", "ActQuant"]

class WeightQuant(nn.Module):
    """Per-layer fake quantization of a weight tensor with a straight-through gradient."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def quantized(self, w: torch.Tensor) -> torch.Tensor:
        """The weight on its grid (no gradient)."""
        with torch.no_grad():
            a = w.detach().double().abs()
            if self.bits == 2:                       # TWN: threshold 0.7 mean|W|, mean magnitude
                keep = a > 0.7 * a.mean()
                alpha = a[keep].mean() if keep.any() else a.max()
                return (torch.sign(w.detach().double()) * keep * alpha).to(w.dtype)
            q = quantize_weights(w.detach().cpu().numpy(), self.bits)   # the compiler's own
            return torch.from_numpy(q.values * q.scale).to(w.dtype)

    def forward(self, w):
        return w + (self.quantized(w) - w).detach()


class ActQuant(nn.Module):
    """Fake quantization of a ReLU output to ``levels`` steps of ``lambda / levels``.

    ``lam`` is set by :func:`recalibrate` (the ``percentile`` of the activations over a data
    set). Gradients pass straight through inside ``[0, lambda]`` and are zero outside.
    """

    def __init__(self, levels: int, percentile: float = 99.9):
        super().__init__()
        self.levels = int(levels)
        self.percentile = float(percentile)
        self.recording = False
        self.seen: list[torch.Tensor] = []
        self.register_buffer("lam", torch.tensor(1.0))

    def set_lambda(self, acts: torch.Tensor) -> None:
        """``lambda`` = the ``percentile`` of ``acts`` (as calibration: the maximum if that is
        0, and 1 if the layer never activates)."""
        flat = acts.detach().flatten().double()
        if flat.numel() > 1 << 24:                   # torch.quantile's input limit
            flat = torch.sort(flat).values[torch.linspace(0, flat.numel() - 1, 1 << 24).long()]
        lam = torch.quantile(flat, self.percentile / 100) if flat.numel() else torch.tensor(0.0)
        if lam <= 0:
            lam = flat.max() if flat.numel() else lam
        self.lam.copy_(lam.float() if lam > 0 else torch.tensor(1.0))

    def forward(self, a):
        if self.recording:
            self.seen.append(a.detach().flatten())
            return a
        step = self.lam / self.levels
        q = torch.clamp(torch.floor(a / step), 0, self.levels) * step
        inside = (a >= 0) & (a <= self.lam)
        return torch.where(inside, a + (q - a).detach(), q.detach())


def _is_relu(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), (nn.ReLU, nn.ReLU6))
    if node.op == "call_function":
        return node.target in (torch.relu, torch.nn.functional.relu, torch.nn.functional.relu6)
    return node.op == "call_method" and node.target == "relu"


def prepare(model: nn.Module, *, bits: int, levels: int, percentile: float = 99.9) -> fx.GraphModule:
    """A copy of ``model`` with BN folded and weight and activation quantizers inserted."""
    if bits not in WEIGHT_BITS:
        raise SnncError(f"bits must be one of {', '.join(map(str, WEIGHT_BITS))}, not {bits}")
    if levels < 1:
        raise SnncError(f"levels (timesteps * max strength) must be >= 1, not {levels}")
    with warnings.catch_warnings():     # the module imports torch.jit's deprecated helpers
        warnings.simplefilter("ignore", DeprecationWarning)
        from torch.fx.experimental.optimization import fuse
    try:
        gm = fuse(copy.deepcopy(model).eval())
    except Exception as exc:                          # tracing errors come in many types
        raise SnncError(f"quantization-aware training needs a model torch.fx can trace "
                        f"(no data-dependent control flow): {type(exc).__name__}: {exc}") from None
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in gm.modules()):
        raise SnncError("a BatchNorm layer does not directly follow a Conv2d, so it cannot be "
                        "folded before quantization-aware training")
    graph = gm.graph
    for k, node in enumerate([n for n in graph.nodes if _is_relu(gm, n)]):
        name = f"snnc_actq{k}"
        gm.add_submodule(name, ActQuant(levels, percentile))
        with graph.inserting_after(node):
            new = graph.call_module(name, (node,))
        node.replace_all_uses_with(new)
        new.args = (node,)
    graph.lint()
    gm.recompile()
    for m in list(gm.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            parametrize.register_parametrization(m, "weight", WeightQuant(bits))
    return gm


def recalibrate(net: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> None:
    """Set every :class:`ActQuant`'s ``lambda`` from one eval-mode pass over ``x``.

    While recording, the quantizers pass activations through unchanged, so each ``lambda`` is
    the percentile of the float activations, exactly what ``snnc compile`` calibrates on.
    """
    quants = [m for m in net.modules() if isinstance(m, ActQuant)]
    was = net.training
    net.eval()
    for q in quants:
        q.recording = True
        q.seen = []
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                net(x[start:start + batch_size])
        for q in quants:
            q.set_lambda(torch.cat(q.seen))
    finally:
        for q in quants:
            q.recording = False
            q.seen = []
        net.train(was)


def strip(net: fx.GraphModule) -> fx.GraphModule:
    """Remove the quantizers: weights stay on their grid, activation quantizers are dropped."""
    for m in list(net.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)) and parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    for node in list(net.graph.nodes):
        if node.op == "call_module" and isinstance(net.get_submodule(node.target), ActQuant):
            node.replace_all_uses_with(node.args[0])
            net.graph.erase_node(node)
            net.delete_submodule(node.target)
    net.graph.lint()
    net.recompile()
    return net.eval()


def finetune(model: nn.Module, x, y, *, bits: int, timesteps: int, max_strength: int,
             epochs: int = 30, lr: float = 1e-3, batch_size: int = 32, distill: float = 0.7,
             temperature: float = 2.0, percentile: float = 99.9, seed: int = 0,
             progress: bool = False) -> fx.GraphModule:
    """Quantization-aware fine-tuning of a trained ``model`` (see the module docstring).

    Parameters
    ----------
    model : nn.Module
        The trained float network (not modified); also the distillation teacher.
    x, y : arrays
        Training inputs (batch first, the model's input shape) and integer labels.
    bits : {8, 4, 2}
    timesteps, max_strength : int
        The SNN settings the network will be compiled at; ``levels = timesteps * max_strength``.
    epochs, lr, batch_size :
        Adam with a cosine learning-rate schedule.
    distill : float in [0, 1]
        Weight of the distillation term (0: cross-entropy only).
    percentile : float
        The activation percentile, as ``snnc compile --percentile``.
    seed : int
    progress : bool
        Show a progress bar (one step per epoch) on stderr.

    Returns
    -------
    torch.fx.GraphModule
        The fine-tuned network, BN folded, weights on a per-layer ``bits``-bit grid, in eval mode.
    """
    if not 0.0 <= distill <= 1.0:
        raise SnncError(f"distill must be in [0, 1], not {distill}")
    if epochs < 1:
        raise SnncError(f"epochs must be >= 1, not {epochs}")
    with one_thread():
        return _finetune(model, np.asarray(x), np.asarray(y), bits, timesteps * max_strength,
                         epochs, lr, batch_size, distill, temperature, percentile, seed, progress)


def _finetune(model, x, y, bits, levels, epochs, lr, batch_size, distill, temperature,
              percentile, seed, progress):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    teacher = copy.deepcopy(model).eval()
    net = prepare(model, bits=bits, levels=levels, percentile=percentile)
    X = torch.as_tensor(x, dtype=torch.float32)
    Y = torch.as_tensor(y, dtype=torch.int64)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    F = nn.functional
    for _ in tqdm(range(epochs), desc=f"QAT {bits}-bit", unit="epoch", file=sys.stderr,
                  disable=not progress):
        recalibrate(net, X)
        net.train()
        order = torch.randperm(len(X), generator=gen)
        for start in range(0, len(X), batch_size):
            idx = order[start:start + batch_size]
            opt.zero_grad()
            out = net(X[idx])
            loss = F.cross_entropy(out, Y[idx])
            if distill:
                with torch.no_grad():
                    soft = F.softmax(teacher(X[idx]) / temperature, dim=1)
                kd = F.kl_div(F.log_softmax(out / temperature, dim=1), soft, reduction="batchmean")
                loss = (1 - distill) * loss + distill * temperature ** 2 * kd
            loss.backward()
            opt.step()
        sched.step()
    return strip(net)
