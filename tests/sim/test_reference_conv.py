"""Convolution and spiking max-pool in the reference, against a scalar event-driven version
that scatters each event by the Conv docstring's rule and runs the max-pool gate incrementally
(the way the core does), with events in random order."""

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from snnc.ir import Conv
from snnc.sim.reference import maxpool_gate, run
from snnc.testing import random_conv_graph, random_inputs
from tests.sim.test_reference import scalar_update


def scatter_conv(proj, in_shape, out_shape, events, V, rng):
    co_n, _, kh, kw = proj.weights.shape
    (sy, sx), (py, px) = proj.stride, proj.padding
    _, ho, wo = out_shape
    rng.shuffle(events)
    synops = 0
    for (c, y, x), s in events:
        for co in range(co_n):
            for ky in range(kh):
                for kx in range(kw):
                    w = int(proj.weights[co, c, ky, kx])
                    ny, nx = y + py - ky, x + px - kx
                    if w == 0 or ny < 0 or nx < 0 or ny % sy or nx % sx:
                        continue
                    oy, ox = ny // sy, nx // sx
                    if oy < ho and ox < wo:
                        V[(co * ho + oy) * wo + ox] += w * s
                        synops += 1
    return synops


def event_driven(graph, x, T, rng):
    pops = graph.populations
    V = [np.zeros(p.size, dtype=object) for p in pops]
    gate = {}   # pool pop -> (acc per member, best_acc, best_idx, cur_s) per window
    synops = 0
    spikes = [[] for _ in pops]
    for _ in range(T):
        out = {0: [int(v) for v in x]}
        for k, pop in enumerate(pops, start=1):
            if pop.maxpool:
                (proj,) = graph.incoming(k)
                c, h, w = graph.shape(proj.src)
                kk = proj.kernel
                _, ho, wo = pop.shape
                acc, best_acc, best_idx, cur = gate.setdefault(
                    k, ([0] * (c * h * w), [0] * pop.size, [0] * pop.size, None))
                cur = [0] * pop.size
                order = [i for i, s in enumerate(out[proj.src]) if s]
                rng.shuffle(order)
                for i in order:
                    s = out[proj.src][i]
                    ch, y, xx = i // (h * w), (i // w) % h, i % w
                    if y >= ho * kk or xx >= wo * kk:
                        continue
                    win = (ch * ho + y // kk) * wo + xx // kk
                    m = (y % kk) * kk + xx % kk
                    acc[i] += s
                    if acc[i] > best_acc[win] or (acc[i] == best_acc[win] and m <= best_idx[win]):
                        best_acc[win], best_idx[win], cur[win] = acc[i], m, s
                    elif m == best_idx[win]:
                        cur[win] = s
                gate[k] = (acc, best_acc, best_idx, cur)
                V[k - 1] = [a * 64 + i for a, i in zip(best_acc, best_idx)]   # the gate state
                out[k] = cur
                spikes[k - 1].append(cur)
                continue
            for proj in graph.incoming(k):
                src = out[proj.src]
                if isinstance(proj, Conv):
                    shp = graph.shape(proj.src)
                    ev = [((i // (shp[1] * shp[2]), (i // shp[2]) % shp[1], i % shp[2]), s)
                          for i, s in enumerate(src) if s]
                    synops += scatter_conv(proj, shp, pop.shape, ev, V[k - 1], rng)
                else:
                    for i, s in enumerate(src):
                        if s:
                            for j in range(pop.size):
                                if proj.weights[j, i]:
                                    V[k - 1][j] += int(proj.weights[j, i]) * s
                                    synops += 1
            res = scalar_update(pop, V[k - 1])
            out[k] = res
            spikes[k - 1].append(res)
    return V, spikes, synops


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1))
def test_conv_and_pool_match_event_driven(s):
    rng = np.random.default_rng(s)
    g = random_conv_graph(rng, max_hw=6)
    x = random_inputs(rng, g, 1)[0]
    ref = run(g, x[None], g.timesteps)
    V, spikes, synops = event_driven(g, x, g.timesteps, np.random.default_rng([s, 1]))
    for k in range(len(g.populations)):
        assert np.array_equal(np.array(spikes[k], dtype=np.int64), ref.spikes[k][:, 0]), k
        assert np.array_equal(np.array(V[k], dtype=np.int64), ref.v_final[k][0]), k
    assert synops == ref.synops[0]


def test_maxpool_gate_golden():
    # One channel, 2x2 input, one 2x2 window; members in row-major order 0..3.
    acc = np.array([[3, 5, 5, 1]])
    s = np.array([[1, 2, 0, 1]])
    # member 1 and 2 tie on 5: the first (1) wins and passes its strength 2.
    assert maxpool_gate(acc, s, (1, 2, 2), 2).tolist() == [[2]]
    # the winner did not spike this timestep: nothing passes.
    assert maxpool_gate(np.array([[9, 5, 5, 1]]), np.array([[0, 2, 0, 1]]), (1, 2, 2), 2).tolist() == [[0]]
    # 3x3 input with k=2: the last row and column are dropped.
    acc = np.arange(9)[None]
    assert maxpool_gate(acc, np.ones((1, 9), np.int64), (1, 3, 3), 2).tolist() == [[1]]
