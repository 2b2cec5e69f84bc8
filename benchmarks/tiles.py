"""Scaling over tiles: cycles per inference and parallel efficiency on 1, 2, 4, 8 and 16 tiles.

For each network the compiler maps it with ``--tiles N`` (snnc.compiler.tiles.target_for_tiles:
a near-square mesh of the smallest standard tile size that holds it; the partition splits every
layer over all tiles) and the array's cycle-exact twin (snnc.sim.array.ArrayModel: every tile
core, the routers, the inboxes, the host port, clock by clock) runs the same inputs. Results are
checked against the reference on every tiling; only cycles differ. Parallel efficiency is
``cycles(1) / (N * cycles(N))``. Where no standard tile size holds the network's share (the
VGG-like CNN on one or two tiles), the tiles are sized to the network (``1x1-fit``); capacities
do not change cycles.

Networks:
- the demo CNN (``make demo`` writes build/demo-cnn/bundle; its first test images);
- a VGG-like CNN on 32x32x3 inputs with random sparse 4-bit weights (seed 0, half the kernel
  taps zero): conv 16, max-pool, conv 32, max-pool, conv 64, max-pool, dense 10 (27,648 neurons,
  too large for one small tile); thresholds set per layer so that about a fifth of the neurons
  spike in the first timestep; random inputs (half the pixels nonzero).

    .venv/bin/python benchmarks/tiles.py [--samples 2] [--tiles 1,2,4,8,16] [--skip-demo]
"""

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from snnc.compiler.bundle import BundleError, load_bundle
from snnc.compiler.convert import apply_clamps
from snnc.compiler.data import load_npz, quantize_inputs
from snnc.compiler.tilemap import array_params, map_tiles
from snnc.compiler.tiles import TilingError, partition, target_for_tiles
from snnc.ir import (Conv, Dense, Graph, InputPopulation, MaxPool, Population, Readout,
                     conv_output_shape)
from snnc.sim.array import ArrayModel
from snnc.sim.reference import run as run_reference


def _pop(name, shape, theta, s_max=15, spiking=True, maxpool=False):
    size = int(np.prod(shape))
    return Population(name=name, size=size, bias=np.zeros(size, np.int64), theta=theta,
                      s_max=s_max, v_min=0, v_max=0 if maxpool else theta, spiking=spiking,
                      shape=shape, maxpool=maxpool)


def vgg_like(seed: int = 0, T: int = 2, density: float = 0.5, target_rate: float = 0.2):
    """The synthetic VGG-like CNN (module docstring) and its random inputs."""
    rng = np.random.default_rng(seed)
    inp = InputPopulation("in", (3, 32, 32), False)
    x = rng.integers(1, 256, size=(16, 3 * 32 * 32)) * (rng.random((16, 3 * 32 * 32)) < 0.5)
    pops, projs = [], []
    shape, src = inp.shape, 0
    for i, co in enumerate((16, 32, 64)):
        w = rng.integers(-7, 8, size=(co, shape[0], 3, 3)) * (rng.random((co, shape[0], 3, 3)) < density)
        out = conv_output_shape(shape, co, (3, 3), (1, 1), (1, 1))
        pops.append(_pop(f"conv{i + 1}", out, 1))
        projs.append(Conv(src, len(pops), w, 4, (1, 1), (1, 1)))
        pooled = (co, out[1] // 2, out[2] // 2)
        pops.append(_pop(f"pool{i + 1}", pooled, 1, maxpool=True))
        projs.append(MaxPool(len(pops) - 1, len(pops), 2))
        shape, src = pooled, len(pops)
    n_in = int(np.prod(shape))
    w = rng.integers(-7, 8, size=(10, n_in)) * (rng.random((10, n_in)) < density)
    pops.append(_pop("fc", (10,), 1, s_max=1, spiking=False))
    projs.append(Dense(src, len(pops), w, 4))
    g = apply_clamps(Graph(input=inp, populations=tuple(pops), projections=tuple(projs),
                           timesteps=T, readout=Readout.MEMBRANE, name="vgg-like"))
    # Thresholds, layer by layer: the smallest power of two at which at most ``target_rate`` of
    # the layer's neurons spike in the first timestep (on the first inputs).
    for k in range(1, g.n_pops):
        if g.pop(k).maxpool or not g.pop(k).spiking:
            continue
        theta = 1
        while True:
            trial = _set_theta(g, k, theta)
            res = run_reference(trial, x[:4], 1)
            if (res.spikes[k - 1][0] != 0).mean() <= target_rate or theta > 1 << 20:
                g = trial
                break
            theta *= 2
    return g, x


def _set_theta(g: Graph, k: int, theta: int) -> Graph:
    pops = list(g.populations)
    p = pops[k - 1]
    pops[k - 1] = dataclasses.replace(p, theta=theta, v_max=max(p.v_max, theta))
    return apply_clamps(g.replace(populations=tuple(pops)))


def scaling(name: str, g: Graph, x: np.ndarray, tiles: list[int]) -> None:
    ref = run_reference(g, x, g.timesteps)
    ref_v = np.concatenate(ref.v_final, axis=1)
    print(f"\n{name}: {sum(g.size(k) for k in range(1, g.n_pops)):,} neurons, "
          f"{ref.synops.mean():,.0f} synaptic ops per inference (mean of {len(x)} inputs), "
          f"T={g.timesteps}")
    print(f"{'tiles':>5}  {'target':<8} {'cycles/inference':>17}  {'efficiency':>10}  "
          f"{'busiest tile':>12}  {'mean busy':>9}  {'flits':>9}  {'model s':>7}")
    base = None
    for n in tiles:
        target = target_for_tiles(n, g)
        try:
            part = partition(g, target)
            image = map_tiles(g, part)
            params = array_params(image, g.timesteps, target.tile)
            label = target.name
        except TilingError:       # no standard tile holds it: a tile sized to the network
            part = partition(g, target, check=False)
            image = map_tiles(g, part)
            params = array_params(image, g.timesteps)
            label = f"{target.cols}x{target.rows}-fit"
        t0 = time.perf_counter()
        r = ArrayModel(params).run(image, x, g.timesteps)
        took = time.perf_counter() - t0
        if not np.array_equal(r.v_global, ref_v) or any(
                not np.array_equal(a, b) for a, b in zip(r.spikes, ref.spikes)):
            sys.exit(f"{name} on {n} tiles: the array's results differ from the reference")
        cyc = float(r.cycles.mean())
        base = base or cyc
        busy = (r.active / r.cycles[:, None]).mean()
        print(f"{n:>5}  {label:<8} {cyc:>17,.0f}  {base / (n * cyc):>10.0%}  "
              f"{r.active.max(axis=1).mean():>12,.0f}  {busy:>9.0%}  "
              f"{r.traffic.mean():>9,.0f}  {took:>7.1f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--tiles", default="1,2,4,8,16")
    ap.add_argument("--skip-demo", action="store_true")
    args = ap.parse_args(argv)
    tiles = [int(t) for t in args.tiles.split(",")]
    if not args.skip_demo:
        try:
            bundle = load_bundle("build/demo-cnn/bundle")
        except BundleError as exc:
            sys.exit(f"{exc}\nrun `make demo` first (or pass --skip-demo)")
        xf, _ = load_npz(Path("build/demo-cnn/test.npz"))
        x = quantize_inputs(xf[:args.samples], bundle.meta).reshape(args.samples, -1)
        scaling("demo CNN (build/demo-cnn/bundle)", bundle.graph, x, tiles)
    g, x = vgg_like()
    scaling("VGG-like CNN, 32x32x3, random 4-bit weights (half zero)", g, x[:args.samples], tiles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
