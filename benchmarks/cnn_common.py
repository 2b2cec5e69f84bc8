"""Shared by the CNN benchmarks: the demo CNN, compiled variants, and accuracy for every T
from one reference run.

``accuracy_by_timestep`` runs the reference model once for ``T_max`` timesteps and reads the
prediction after every prefix ``t <= T_max`` from the readout's exact integer trajectory: the
spiking layers do not depend on the compiled T, and the readout integrates without clamping
within its compiled T (the clamp policy), so its membrane after ``t`` steps is
``sum over steps < t of (W . s + bias)``, the same as a run compiled for ``t`` timesteps. The
function checks this against separate reference runs at a few ``t``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from snnc.compiler.data import quantize_inputs
from snnc.compiler.pipeline import compile_variants
from snnc.ir import Dense
from snnc.models.digits import accuracy, one_thread
from snnc.models.digits_cnn import cnn_split, export_cnn, train_digits_cnn
from snnc.sim.reference import run


def trained_cnn(seed: int, tmp: Path):
    """Train the demo CNN; return (path of its .pt2, float test accuracy)."""
    with one_thread():
        model = train_digits_cnn(seed)
    _, _, x_te, y_te = cnn_split()
    return export_cnn(model, tmp / f"digits_cnn_{seed}.pt2"), accuracy(model, x_te, y_te)


def accuracy_by_timestep(graph, x_int, y, check=(1, 2, 5)) -> np.ndarray:
    """Test accuracy after t = 1..graph.timesteps steps (index t-1), from one reference run."""
    T = graph.timesteps
    r = run(graph, x_int)
    last = graph.n_pops - 1
    readout = graph.pop(last)
    current = np.broadcast_to(readout.bias, (T, len(x_int), readout.size)).copy()
    for proj in graph.incoming(last):
        assert isinstance(proj, Dense), "the readout is fed by dense projections"
        src = (np.broadcast_to(x_int, (T, *x_int.shape)) if proj.src == 0
               else r.spikes[proj.src - 1])
        current += src @ proj.weights.T
    v = current.cumsum(axis=0)
    assert np.array_equal(v[-1], r.v_final[-1]), "the readout clamped within T"
    pred = v.argmax(axis=2)
    for t in (t for t in check if t < T):
        assert np.array_equal(pred[t - 1], run(graph, x_int, timesteps=t).prediction)
    return (pred == y[None, :]).mean(axis=1)


def sweep(path, *, bits: int, strengths, timesteps: int, percentile: float = 99.9):
    """``{S: accuracy after t = 1..timesteps}`` on the test split, for each S."""
    x_tr, y_tr, x_te, y_te = cnn_split()
    variants = [{"bits": bits, "timesteps": timesteps, "max_strength": s} for s in strengths]
    out = {}
    with one_thread():
        compiled = compile_variants(path, variants, calib=(x_tr, y_tr), percentile=percentile)
        for s, (graph, meta) in zip(strengths, compiled):
            x_int = quantize_inputs(x_te.reshape(len(x_te), -1), meta)
            out[s] = accuracy_by_timestep(graph, x_int, y_te)
    return out


def workdir():
    return tempfile.TemporaryDirectory()
