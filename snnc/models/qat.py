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
3. **Activations, as the compiled SNN has them.** At the start of every epoch the current
   weights are compiled in memory by the compiler itself (:func:`align`: extraction,
   calibration on all of ``x``, conversion). Each ReLU's output is then clipped at
   ``S_l * u_l`` and floored to ``T * S_l`` steps, where ``u_l = theta_l * c_l`` is the
   activation one unit of spike strength *actually* stands for once the threshold ``theta_l`` is
   an integer (not the nominal ``lambda_l / S_l``: at 2 bits the current unit ``c_l`` is coarse
   and the rounding of ``theta`` moves the step by up to about 10%). An identity shortcut of a
   residual addition is scaled by the gain the compiled SNN gives it (at 2 bits the shortcut and
   the convolution share one current unit and the shortcut's weight is the integer 1, so its
   gain can be far from 1: 0.49 in the demo CNN). At ``T = 1`` the quantized network then
   computes what the SNN computes.
4. **Distillation.** The loss mixes cross-entropy with the float model's softened outputs
   (``distill`` weight, ``temperature``): a small ternary network learns faster from the teacher.
5. **Best epoch on held-out data.** A stratified ``holdout`` part of ``(x, y)`` is kept out of
   training; after every epoch the compiled SNN runs on it (the integer reference model at
   ``select_timesteps``) and the epoch with the best held-out SNN accuracy is returned.

Why the last two matter: a ternary network's accuracy moves by several points from one epoch to
the next (a weight crossing the ternary threshold, a threshold ``theta`` rounding the other way),
even late in a cosine schedule, and floating-point differences between CPUs (vector kernels)
send runs along different trajectories. Returning the last epoch made the result a draw from
that noise (the digits CNN's 2-bit SNN came to anything from 93% to 98% at ``T = 2``,
depending on the seed and the CPU); measuring the deployed SNN and keeping the best epoch makes
it a maximum over the late epochs instead.

The result is a BN-free ``torch.fx.GraphModule`` whose weights are exactly ``scale * k`` with
integer ``|k| <= 2**(bits-1) - 1`` per layer; export it (for example with
:func:`snnc.models.digits_cnn.export_cnn` or ``torch.export``) and compile it at the same bits.
For a layer with a single input the compiler's MSE scale search then recovers exactly these
integers (its first candidate scale, ``max|W| / q``, has zero error). Its ``meta["snnc_qat"]``
records the chosen epoch and the held-out accuracies of every epoch.

Everything runs on the CPU on one thread and is deterministic for a given ``seed`` on one
machine; across CPUs the result varies within the spread the README quotes.
"""

from __future__ import annotations

import copy
import operator
import sys
import warnings

import numpy as np
import torch
from torch import fx, nn
from torch.nn.utils import parametrize
from tqdm import tqdm

from ..compiler.data import quantize_inputs
from ..compiler.errors import SnncError
from ..compiler.pipeline import compile_module
from ..compiler.quantize import quantize_weights
from ..ir import WEIGHT_BITS
from ..sim.reference import run
from .digits import one_thread

__all__ = ["finetune", "prepare", "strip", "recalibrate", "align", "WeightQuant", "ActQuant",
           "Shortcut"]

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


def _grid_weight(m: nn.Module) -> torch.Tensor:
    """The weight of a fake-quantized layer exactly on its grid.

    The parametrization's forward, ``w + (q - w)``, is ``q`` only up to float rounding (a few
    ulps, depending on ``w``), so the grid value is taken from the quantizer itself."""
    [wq] = m.parametrizations.weight
    return wq.quantized(m.parametrizations.weight.original)


class ActQuant(nn.Module):
    """Fake quantization of a ReLU output to ``levels`` steps of ``lambda / levels``.

    ``lam`` is set by :func:`recalibrate` (the ``percentile`` of the activations over a data
    set) or by :func:`align` (the compiled SNN's ``S * u``). Gradients pass straight through
    inside ``[0, lambda]`` and are zero outside.
    """

    def __init__(self, levels: int, percentile: float = 99.9, layer: str | None = None):
        super().__init__()
        self.levels = int(levels)
        self.layer = layer                           # the compiled layer it follows
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


class Shortcut(nn.Module):
    """An identity shortcut into a residual addition, scaled by the gain the compiled SNN gives
    it (``weight * c / u_x``, set by :func:`align`; 1 until then)."""

    def __init__(self, layer: str):
        super().__init__()
        self.layer = layer                           # the compiled layer the addition feeds
        self.register_buffer("gain", torch.tensor(1.0))

    def forward(self, x):
        return x * self.gain


_ADDS = (operator.add, operator.iadd, torch.add)


def _is_add(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in _ADDS) or (
        node.op == "call_method" and node.target in ("add", "add_"))


def _linear_name(gm: fx.GraphModule, node) -> str | None:
    if isinstance(node, fx.Node) and node.op == "call_module" and isinstance(
            gm.get_submodule(node.target), (nn.Conv2d, nn.Linear)):
        return node.target
    return None


def _add_layer(gm: fx.GraphModule, add: fx.Node) -> str | None:
    """The linear module a residual addition adds its shortcut to (None unless exactly one)."""
    names = [n for n in (_linear_name(gm, a) for a in add.args[:2]) if n]
    return names[0] if len(names) == 1 else None


def _layer_of(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """The compiled layer a ReLU's input belongs to: the linear module feeding it, directly or
    through a residual addition (the compiler names a layer after its linear operator)."""
    src = node.args[0] if node.args else None
    if isinstance(src, fx.Node) and _is_add(src):
        return _add_layer(gm, src)
    return _linear_name(gm, src)


def _is_relu(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), (nn.ReLU, nn.ReLU6))
    if node.op == "call_function":
        return node.target in (torch.relu, torch.nn.functional.relu, torch.nn.functional.relu6)
    return node.op == "call_method" and node.target == "relu"


def _fold(model: nn.Module) -> fx.GraphModule:
    """A traced copy of ``model`` in eval mode with every Conv2d -> BatchNorm2d pair folded."""
    with warnings.catch_warnings():     # the module imports torch.jit's deprecated helpers
        warnings.simplefilter("ignore", DeprecationWarning)
        from torch.fx.experimental.optimization import fuse
    try:
        return fuse(copy.deepcopy(model).eval())
    except Exception as exc:                          # tracing errors come in many types
        raise SnncError(f"quantization-aware training needs a model torch.fx can trace "
                        f"(no data-dependent control flow): {type(exc).__name__}: {exc}") from None


def prepare(model: nn.Module, *, bits: int, levels: int, percentile: float = 99.9) -> fx.GraphModule:
    """A copy of ``model`` with BN folded and weight and activation quantizers inserted."""
    if bits not in WEIGHT_BITS:
        raise SnncError(f"bits must be one of {', '.join(map(str, WEIGHT_BITS))}, not {bits}")
    if levels < 1:
        raise SnncError(f"levels (timesteps * max strength) must be >= 1, not {levels}")
    gm = _fold(model)
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in gm.modules()):
        raise SnncError("a BatchNorm layer does not directly follow a Conv2d, so it cannot be "
                        "folded before quantization-aware training")
    graph = gm.graph
    for k, node in enumerate([n for n in graph.nodes if _is_add(n)]):
        layer = _add_layer(gm, node)
        for i, arg in enumerate(node.args[:2]):
            if layer is None or not isinstance(arg, fx.Node) or _linear_name(gm, arg):
                continue
            name = f"snnc_shortcut{k}_{i}"
            gm.add_submodule(name, Shortcut(layer))
            with graph.inserting_before(node):
                new = graph.call_module(name, (arg,))
            node.args = node.args[:i] + (new,) + node.args[i + 1:]
    for k, node in enumerate([n for n in graph.nodes if _is_relu(gm, n)]):
        name = f"snnc_actq{k}"
        gm.add_submodule(name, ActQuant(levels, percentile, _layer_of(gm, node)))
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
    """Remove the quantizers: weights stay on their grid; activation quantizers and shortcut
    gains are dropped (the compiler puts the gains back)."""
    for m in list(net.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)) and parametrize.is_parametrized(m, "weight"):
            q = _grid_weight(m)
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
            with torch.no_grad():
                m.weight.copy_(q)
    for node in list(net.graph.nodes):
        if node.op == "call_module" and isinstance(net.get_submodule(node.target),
                                                    (ActQuant, Shortcut)):
            node.replace_all_uses_with(node.args[0])
            net.graph.erase_node(node)
            net.delete_submodule(node.target)
    net.graph.lint()
    net.recompile()
    return net.eval()


class _Snapshot:
    """The plain folded network (no quantizers) with the fine-tuned network's current weights
    copied in: what :func:`strip` would return, without touching the network being trained."""

    def __init__(self, model: nn.Module):
        self.plain = _fold(model)

    def __call__(self, net: fx.GraphModule) -> fx.GraphModule:
        with torch.no_grad():
            for name, m in net.named_modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    p = self.plain.get_submodule(name)
                    p.weight.copy_(_grid_weight(m) if parametrize.is_parametrized(m, "weight")
                                   else m.weight)             # the quantized weight
                    if m.bias is not None:
                        p.bias.copy_(m.bias)
        return self.plain.eval()


def align(net: fx.GraphModule, layers: list[dict], timesteps: int) -> None:
    """Set every :class:`ActQuant` and :class:`Shortcut` of ``net`` from a compiled SNN's layer
    table (``meta["layers"]`` of ``snnc compile``): clip ``S_l * u_l`` in ``timesteps * S_l``
    steps, and each identity shortcut's gain ``c / u_x``."""
    by_name = {layer["name"]: layer for layer in layers}
    for m in net.modules():
        if not isinstance(m, (ActQuant, Shortcut)):
            continue
        layer = by_name.get(m.layer)
        if layer is None or (isinstance(m, ActQuant) and layer["unit"] is None):
            raise SnncError(f"quantization-aware training could not match the activation after "
                            f"'{m.layer}' to a spiking layer of the compiled SNN (its layers: "
                            f"{', '.join(by_name)})")
        if isinstance(m, ActQuant):
            m.levels = int(timesteps * layer["s_max"])
            m.lam.fill_(layer["s_max"] * layer["unit"])
        else:
            gains = [i["weight_scale"] for i in layer["inputs"] if i["kind"] == "identity"]
            if len(gains) != 1:
                raise SnncError(f"quantization-aware training expected one identity shortcut "
                                f"into '{m.layer}', the compiled SNN has {len(gains)}")
            m.gain.fill_(gains[0])


def _holdout(y: np.ndarray, fraction: float, seed: int):
    """Indices ``(train, held_out)``: a stratified split when every class has two samples."""
    from sklearn.model_selection import train_test_split

    n = len(y)
    if fraction == 0:
        return np.arange(n), np.arange(0)
    if round(n * fraction) < 1 or n - round(n * fraction) < 1:
        raise SnncError(f"holdout={fraction} of {n} samples leaves no held-out or no training "
                        "sample; give more samples or holdout=0")
    _, counts = np.unique(y, return_counts=True)
    stratify = y if counts.min() >= 2 and round(n * fraction) >= len(counts) else None
    return train_test_split(np.arange(n), test_size=fraction, random_state=seed,
                            stratify=stratify)


def finetune(model: nn.Module, x, y, *, bits: int, timesteps: int, max_strength,
             epochs: int = 30, lr: float = 1e-3, batch_size: int = 32, distill: float = 0.7,
             temperature: float = 2.0, percentile: float = 99.9, holdout: float = 0.0,
             select_timesteps: int | None = None, seed: int = 0,
             progress: bool = False) -> fx.GraphModule:
    """Quantization-aware fine-tuning of a trained ``model`` (see the module docstring).

    Parameters
    ----------
    model : nn.Module
        The trained float network (not modified); also the distillation teacher.
    x, y : arrays
        Training inputs (batch first, the model's input shape) and integer labels: the training
        split, never the test split. All of ``x`` is the calibration set of the in-loop
        compilations (as ``snnc compile --calib`` with the same data).
    bits : {8, 4, 2}
    timesteps : int
        The activations are trained at ``timesteps * S_l`` levels (``timesteps = 1``: the
        quantized network equals the SNN at T = 1).
    max_strength : int or str
        As ``snnc compile --max-strength``.
    epochs, lr, batch_size :
        Adam with a cosine learning-rate schedule.
    distill : float in [0, 1]
        Weight of the distillation term (0: cross-entropy only).
    temperature : float > 0
        Distillation temperature.
    percentile : float
        The activation percentile, as ``snnc compile --percentile``.
    holdout : float in [0, 1)
        Fraction of ``(x, y)`` held out of training (stratified by label) to choose the epoch
        on; 0 (the default) trains on everything and chooses the epoch by the SNN's accuracy on
        all of ``(x, y)``.
    select_timesteps : int, optional
        The T at which the held-out SNN accuracy is measured: the T the network will be
        compiled at (default ``timesteps``).
    seed : int
    progress : bool
        Show a progress bar (one step per epoch, with the held-out SNN accuracy) on stderr.

    Returns
    -------
    torch.fx.GraphModule
        The fine-tuned network, BN folded, weights on a per-layer ``bits``-bit grid, in eval mode.
        ``meta["snnc_qat"]``: ``epoch`` (chosen, from 0), ``selection_accuracy`` (its SNN
        accuracy on the selection samples), ``selection_samples``, ``held_out`` (whether those
        were held out of training), ``history`` (every epoch's accuracy).
    """
    if not 0.0 <= distill <= 1.0:
        raise SnncError(f"distill must be in [0, 1], not {distill}")
    if epochs < 1:
        raise SnncError(f"epochs must be >= 1, not {epochs}")
    if not 0.0 <= holdout < 1.0:
        raise SnncError(f"holdout must be in [0, 1), not {holdout}")
    if not temperature > 0:
        raise SnncError(f"temperature must be > 0, not {temperature}")
    select_timesteps = timesteps if select_timesteps is None else select_timesteps
    for name, t in (("timesteps", timesteps), ("select_timesteps", select_timesteps)):
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 1:
            raise SnncError(f"{name} must be an integer >= 1, not {t}")
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y) or len(x) == 0:
        raise SnncError(f"x and y must hold the same number (> 0) of samples, not {len(x)} and "
                        f"{len(y)}")
    with one_thread():
        return _finetune(model, x, y, bits, int(timesteps), max_strength, epochs, lr,
                         batch_size, distill, temperature, percentile, holdout,
                         int(select_timesteps), seed, progress)


def _finetune(model, x, y, bits, timesteps, max_strength, epochs, lr, batch_size, distill,
              temperature, percentile, holdout, select_timesteps, seed, progress):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    teacher = copy.deepcopy(model).eval()
    net = prepare(model, bits=bits, levels=timesteps, percentile=percentile)
    snapshot = _Snapshot(model)
    x_cal = x.astype(np.float64)
    train, held = _holdout(y, holdout, seed)
    chosen = held if len(held) else train            # the samples the epoch is chosen on
    X = torch.as_tensor(x[train], dtype=torch.float32)
    Y = torch.as_tensor(y[train], dtype=torch.int64)
    x_chosen = x_cal[chosen]
    variant = [{"bits": bits, "timesteps": select_timesteps, "max_strength": max_strength}]

    def compiled():
        """The current weights as ``snnc compile`` would make them (calibrated on all of x)."""
        [(graph, meta)] = compile_module(snapshot(net), variant, calib=(x_cal, None),
                                         percentile=percentile,
                                         input_shape=tuple(x.shape[1:]))
        return graph, meta

    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    F = nn.functional
    history, best = [], (None, -1, None)
    bar = tqdm(range(epochs), desc=f"QAT {bits}-bit", unit="epoch", file=sys.stderr,
               disable=not progress)
    graph, meta = compiled()
    for epoch in bar:
        align(net, meta["layers"], timesteps)      # the units do not depend on T
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
        graph, meta = compiled()
        acc = float(np.mean(run(graph, quantize_inputs(x_chosen, meta)).prediction == y[chosen]))
        history.append(acc)
        bar.set_postfix_str(f"SNN {acc:.2%} (best {max(history):.2%})")
        if best[0] is None or acc >= best[0]:             # ties: the later, more settled epoch
            best = (acc, epoch, copy.deepcopy(net.state_dict()))
    bar.close()
    net.load_state_dict(best[2])
    out = strip(net)
    out.meta["snnc_qat"] = {"epoch": best[1], "selection_accuracy": best[0],
                            "selection_samples": int(len(chosen)), "held_out": bool(len(held)),
                            "history": history}
    return out
