"""The integer reference model vs SpikingJelly on the same network, one thread, warm.

The network: a 64-96-48-10 MLP trained on the digits (30 epochs, seed 0), compiled by snnc at
4 bits, T = 4, binary spikes (S = 1, as SpikingJelly's ``IFNode`` fires), run on the 540 test
images. SpikingJelly 2.0 runs it as ``SeqToANNContainer(Linear)`` + multi-step
``IFNode(v_reset=None)`` (reset by subtraction), in float64 and in float32, with the integer
weights, biases and thresholds of snnc's graph. Every engine must give snnc's spikes at every
timestep and its predictions before any time is printed.

Times are the best of ``--repeats`` interleaved rounds after one warm-up run, with torch and BLAS on one
thread. SpikingJelly installs without its dependencies (they pull a CUDA torch; see
../shared/TOOLCHAIN.md)::

    .venv/bin/pip install --no-deps spikingjelly==2.0.0 loguru requests
    .venv/bin/python benchmarks/reference_speed.py [--repeats 20]
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"          # before numpy and torch load their thread pools

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from snnc.compiler.data import quantize_inputs  # noqa: E402
from snnc.compiler.pipeline import compile_module  # noqa: E402
from snnc.models.digits import digits_split, fit  # noqa: E402
from snnc.sim.reference import run  # noqa: E402


def network(seed: int = 0):
    """The compiled graph and the quantized test inputs."""
    torch.manual_seed(seed)
    x_tr, y_tr, x_te, _ = digits_split()
    model = fit(lambda: nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 48), nn.ReLU(),
                                      nn.Linear(48, 10)),
                x_tr, y_tr, seed=seed, epochs=30, batch_size=64, lr=3e-3)
    ((graph, meta),) = compile_module(model, [{"bits": 4, "timesteps": 4, "max_strength": 1}],
                                      calib=(x_tr, y_tr))
    return graph, quantize_inputs(x_te, meta)


def spikingjelly_net(graph, dtype):
    from spikingjelly.activation_based import layer, neuron
    mods = []
    for proj, pop in zip(graph.projections, graph.populations):
        lin = nn.Linear(proj.weights.shape[1], proj.weights.shape[0])
        lin.weight.data = torch.tensor(proj.weights, dtype=dtype)
        lin.bias.data = torch.tensor(pop.bias, dtype=dtype)
        mods.append(layer.SeqToANNContainer(lin))
        if pop.spiking:
            mods.append(neuron.IFNode(v_threshold=float(pop.theta), v_reset=None,
                                      step_mode="m"))
    return nn.Sequential(*mods).to(dtype)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:
        from spikingjelly.activation_based import functional, neuron
    except ImportError:
        sys.exit("spikingjelly is not installed: .venv/bin/pip install --no-deps "
                 "spikingjelly==2.0.0 loguru requests")
    torch.set_num_threads(1)
    graph, x = network(args.seed)
    if any(p.s_max != 1 for p in graph.populations if p.spiking) or \
            any(len(graph.incoming(k)) != 1 for k in range(1, graph.n_pops)):
        sys.exit("the benchmark network must be a plain chain with binary spikes")
    T = graph.timesteps
    ref = run(graph, x)
    hidden = [k for k in range(1, graph.n_pops) if graph.pop(k).spiking]
    engines = [("snnc reference (exact integer semantics)", lambda: run(graph, x))]
    for name, dtype in (("SpikingJelly float64", torch.float64),
                        ("SpikingJelly float32", torch.float32)):
        net = spikingjelly_net(graph, dtype)
        xs = torch.tensor(x, dtype=dtype).unsqueeze(0).repeat(T, 1, 1)
        seen = {}

        def hook(i):
            def f(module, inp, out):
                seen[i] = out.detach().numpy()
            return f
        nodes = [m for m in net if isinstance(m, neuron.IFNode)]
        handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(nodes)]

        def go():
            functional.reset_net(net)
            with torch.no_grad():
                return net(xs)
        out = go()
        for h in handles:
            h.remove()
        for i, k in enumerate(hidden):
            if not np.array_equal(seen[i].astype(np.int64), ref.spikes[k - 1]):
                sys.exit(f"{name}: spikes of population {k} differ from snnc's")
        if not np.array_equal(out.sum(0).argmax(1).numpy(), ref.prediction):
            sys.exit(f"{name}: predictions differ from snnc's")
        engines.append((name, go))
    # Interleaved rounds, so that every engine meets the same allocator and cache state (the
    # process's history of large allocations moves single timings by 2x).
    times = {name: [] for name, _ in engines}
    for _, f in engines:
        f()
    for _ in range(args.repeats):
        for name, f in engines:
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    rows = [(name, min(times[name])) for name, _ in engines]
    n_img = x.shape[0]
    print(f"64-96-48-10 MLP, 4-bit weights, T={T}, binary spikes, {n_img} digits test images, "
          f"one thread, best of {args.repeats} interleaved warm runs; spikes and predictions identical")
    ours = rows[0][1]
    for name, t in rows:
        print(f"  {name:42s} {t * 1e3:8.2f} ms  ({n_img / t:9,.0f} images/s)"
              + ("" if t is ours else f"  snnc is {t / ours:.2f}x faster"))


if __name__ == "__main__":
    main()
