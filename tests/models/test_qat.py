"""Quantization-aware fine-tuning: quantizers, BN folding, the weight grid the compiler recovers."""

import numpy as np
import pytest
import torch
from torch import nn

from snnc.compiler.errors import SnncError
from snnc.compiler.data import quantize_inputs
from snnc.compiler.quantize import quantize_weights
from snnc.models.qat import ActQuant, WeightQuant, finetune, prepare, recalibrate, strip


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.bn(self.conv(x))), 1))


def toy_data(seed, n=96):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.random((n, 1, 4, 4)).astype(np.float32) * 0.3
    x[np.arange(n), 0, y, y] += 1.0                    # the class is the lit diagonal pixel
    return x, y


def trained_small(seed):
    torch.manual_seed(seed)
    m = Small()
    with torch.no_grad():                              # non-trivial BN statistics
        m.bn.running_mean.uniform_(-0.2, 0.2)
        m.bn.running_var.uniform_(0.5, 2.0)
        m.bn.weight.uniform_(0.5, 1.5)
    return m.eval()


@pytest.mark.parametrize("bits", [8, 4])
def test_weight_quant_is_the_compilers_quantizer(seed, bits):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(6, 5)).astype(np.float32)
    got = WeightQuant(bits).quantized(torch.from_numpy(w)).numpy()
    q = quantize_weights(w, bits)
    assert np.array_equal(got, (q.values * q.scale).astype(np.float32))


def test_ternary_weight_quant_and_straight_through_gradient():
    w = torch.tensor([0.05, -0.9, 1.2, 0.4, -0.3, 0.0], requires_grad=True)
    # mean|w| = 0.475, threshold 0.3325: kept 0.9, 1.2, 0.4 -> alpha = 2.5 / 3
    out = WeightQuant(2)(w)
    alpha = 2.5 / 3
    assert torch.allclose(out, torch.tensor([0, -alpha, alpha, alpha, 0, 0]))
    out.sum().backward()
    assert torch.equal(w.grad, torch.ones(6))


def test_act_quant_floors_to_levels_and_clips():
    q = ActQuant(levels=4)
    q.lam.fill_(2.0)                                   # step 0.5
    a = torch.tensor([-1.0, 0.0, 0.49, 0.5, 1.26, 1.99, 2.0, 3.0], requires_grad=True)
    out = q(a)
    assert out.tolist() == [0.0, 0.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.0]
    out.sum().backward()
    assert a.grad.tolist() == [0, 1, 1, 1, 1, 1, 1, 0]


def test_recalibrate_takes_the_percentile_of_float_activations():
    net = prepare(trained_small(0), bits=2, levels=15)
    x = torch.from_numpy(toy_data(0)[0])
    recalibrate(net, x)
    [aq] = [m for m in net.modules() if isinstance(m, ActQuant)]
    with torch.no_grad():
        acts = torch.relu(net.conv(x)).flatten().double().numpy()
    assert aq.lam.item() == pytest.approx(np.percentile(acts, 99.9), rel=1e-6)


def test_prepare_folds_bn_and_strip_leaves_weights_on_a_grid(seed):
    model = trained_small(seed)
    x, y = toy_data(seed)
    net = finetune(model, x, y, bits=2, timesteps=1, max_strength=7, epochs=3, seed=seed)
    assert not any(isinstance(m, (nn.BatchNorm2d, ActQuant)) for m in net.modules())
    for layer in (net.conv, net.fc):
        mags = np.unique(np.abs(layer.weight.detach().numpy()))
        assert len(mags) <= 2 and mags[0] >= 0          # ternary: {0, alpha}
        values = quantize_weights(layer.weight.detach().numpy(), 2)
        assert values.mse == 0.0                         # the compiler recovers exactly this grid
    # The model before fine-tuning is untouched, and the result is deterministic.
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    again = finetune(model, x, y, bits=2, timesteps=1, max_strength=7, epochs=3, seed=seed)
    for a, b in zip(net.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("bits", [2, 4])
def test_strip_puts_every_weight_exactly_on_the_grid_not_within_rounding(bits):
    # CI seed 1722702148 failed: the parametrization's ``w + (q - w)`` left ternary magnitudes
    # one ulp apart (0.1243776 and 0.12437761). Heavy-tailed weights, as fine-tuning leaves
    # them, show it deterministically (this draw: 3 of 72 conv weights off the grid).
    net = prepare(trained_small(0), bits=bits, levels=15)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w = m.parametrizations.weight.original
                w.copy_(torch.from_numpy((rng.standard_cauchy(tuple(w.shape)) * 0.1)
                                         .astype(np.float32)))
    wanted = {name: m.parametrizations.weight[0].quantized(m.parametrizations.weight.original)
              for name, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    if bits == 2:                                       # the case really is off the grid
        assert not torch.equal(net.conv.weight, wanted["conv"])
    out = strip(net)
    for name, q in wanted.items():
        w = out.get_submodule(name).weight.detach()
        assert torch.equal(w, q), name
        again = quantize_weights(w.numpy(), bits)       # the compiler recovers the same integers
        assert np.array_equal(again.values, quantize_weights(q.numpy(), bits).values), name
        if bits == 2:
            assert again.mse == 0.0, name
            assert len(np.unique(np.abs(w.numpy()))) <= 2, name


def test_finetune_learns_the_toy_task_at_two_bits():
    x, y = toy_data(1, n=240)
    torch.manual_seed(1)
    model = Small()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), Y).backward()
        opt.step()
    model.eval()
    net = finetune(model, x, y, bits=2, timesteps=1, max_strength=7, epochs=20, seed=1)
    with torch.no_grad():
        assert (net(X).argmax(1) == Y).float().mean() >= 0.9


def test_strip_keeps_the_quantized_forward_without_activation_quantizers():
    net = prepare(trained_small(2), bits=4, levels=3)
    x = torch.from_numpy(toy_data(2)[0])
    recalibrate(net, x)
    w = WeightQuant(4).quantized(net.conv.parametrizations.weight.original.detach())
    out = strip(net)
    assert torch.equal(out.conv.weight.detach(), w)
    assert "snnc_actq" not in out.code


def test_bad_arguments_are_clear_errors():
    with pytest.raises(SnncError, match="bits must be one of"):
        prepare(trained_small(0), bits=3, levels=4)
    with pytest.raises(SnncError, match="levels"):
        prepare(trained_small(0), bits=2, levels=0)

    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x             # data-dependent control flow

    with pytest.raises(SnncError, match="torch.fx can trace"):
        prepare(Branchy(), bits=2, levels=4)
    with pytest.raises(SnncError, match="distill"):
        finetune(trained_small(0), *toy_data(0), bits=2, timesteps=1, max_strength=1, distill=2)


class Residual(nn.Module):
    """conv-BN-ReLU, then a residual block (conv-ReLU-conv, + shortcut, ReLU), then linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv3 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        a = torch.relu(self.bn1(self.conv1(x)))
        h = torch.relu(self.conv3(torch.relu(self.conv2(a))) + a)
        return self.fc(torch.flatten(h, 1))


def test_align_takes_units_and_shortcut_gains_from_the_compiled_snn(seed):
    """The activation quantizers step by the compiled SNN's unit u = theta * c (clip S * u, T * S
    levels) and the shortcut is scaled by the compiled identity weight's gain c / u_x."""
    from snnc.compiler.pipeline import compile_module
    from snnc.models.qat import Shortcut, _Snapshot, align

    torch.manual_seed(seed)
    model = Residual().eval()
    x, _ = toy_data(seed)
    net = prepare(model, bits=2, levels=1)
    [shortcut] = [m for m in net.modules() if isinstance(m, Shortcut)]
    assert shortcut.layer == "conv3"
    quants = {m.layer: m for m in net.modules() if isinstance(m, ActQuant)}
    assert set(quants) == {"conv1", "conv2", "conv3"}
    [(_, meta)] = compile_module(_Snapshot(model)(net), [{"bits": 2, "timesteps": 3,
                                                           "max_strength": "5,conv3=3"}],
                                 calib=(x, None), input_shape=x.shape[1:])
    layers = meta["layers"]
    align(net, layers, timesteps=3)
    by_name = {layer["name"]: layer for layer in layers}
    for name, s in (("conv1", 5), ("conv2", 5), ("conv3", 3)):
        assert quants[name].levels == 3 * s
        assert quants[name].lam.item() == pytest.approx(s * by_name[name]["unit"], rel=1e-6)
    [identity] = [i for i in by_name["conv3"]["inputs"] if i["kind"] == "identity"]
    assert shortcut.gain.item() == pytest.approx(identity["weight_scale"], rel=1e-6)
    assert "snnc_shortcut" not in strip(net).code


def test_finetune_returns_the_best_epoch_of_the_compiled_snn(seed):
    """The returned network is the epoch whose compiled SNN scored best on the selection set:
    compiling it again and running the reference model gives exactly that accuracy."""
    from snnc.compiler.pipeline import compile_module
    from snnc.sim.reference import run

    model = trained_small(seed)
    x, y = toy_data(seed)
    net = finetune(model, x, y, bits=2, timesteps=1, max_strength=7, epochs=4, seed=seed,
                   select_timesteps=2)
    info = net.meta["snnc_qat"]
    hist = info["history"]
    assert len(hist) == 4 and info["selection_samples"] == len(x) and not info["held_out"]
    assert info["selection_accuracy"] == max(hist)
    assert info["epoch"] == max(k for k, a in enumerate(hist) if a == max(hist))
    [(graph, meta)] = compile_module(net, [{"bits": 2, "timesteps": 2, "max_strength": 7}],
                                     calib=(x, None), input_shape=x.shape[1:])
    x_int = quantize_inputs(x, meta)
    assert float(np.mean(run(graph, x_int).prediction == y)) == info["selection_accuracy"]

    held = finetune(model, x, y, bits=2, timesteps=1, max_strength=7, epochs=2, seed=seed,
                    holdout=0.25)
    assert held.meta["snnc_qat"]["held_out"]
    assert held.meta["snnc_qat"]["selection_samples"] == 24
    with pytest.raises(SnncError, match="holdout"):
        finetune(model, x, y, bits=2, timesteps=1, max_strength=7, holdout=1.0)
    with pytest.raises(SnncError, match="select_timesteps"):
        finetune(model, x, y, bits=2, timesteps=1, max_strength=7, select_timesteps=0)
