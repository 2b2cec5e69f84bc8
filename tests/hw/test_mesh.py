"""The tile mesh (snnc.hw.mesh) against its twin (snnc.sim.mesh), cycle for cycle, and the mesh's
delivery rules: every destination gets each flit exactly once, in order per (source, destination),
and the mesh drains under any stalls."""

import random

import pytest
from amaranth.sim import Simulator

from snnc.hw.mesh import Mesh, Router
from snnc.hw.params import MeshParams, Port
from snnc.sim.mesh import MeshModel, RouterModel

N = len(Port)


def test_regions_partition_the_tiles():
    for cols, rows in [(1, 1), (4, 1), (1, 3), (3, 2), (4, 4)]:
        p = MeshParams(cols=cols, rows=rows)
        for t in range(p.n_tiles):
            x, y = p.position(t)
            masks = [p.region(x, y, port) for port in Port]
            assert sum(masks) == (1 << p.n_tiles) - 1
            assert all(a & b == 0 for i, a in enumerate(masks) for b in masks[i + 1:])
            assert masks[Port.LOCAL] == 1 << t


def test_params_are_checked():
    with pytest.raises(ValueError, match="cols"):
        MeshParams(cols=0)
    with pytest.raises(ValueError, match="64 tiles"):
        MeshParams(cols=16, rows=8)
    with pytest.raises(ValueError, match="outside"):
        Router(MeshParams(cols=2, rows=2), 2, 0)
    with pytest.raises(TypeError):
        RouterModel(None, 0, 0)


def test_router_matches_its_twin_cycle_for_cycle(seed):
    """A router anywhere in a mesh, flits with any destination set on all five inputs, random
    gaps and random output stalls: ready, valid and flits equal the twin's in every cycle."""
    rng = random.Random(seed)
    cols, rows = rng.randint(1, 4), rng.randint(1, 4)
    p = MeshParams(cols=cols, rows=rows, payload_bits=12, depth=rng.randint(1, 3))
    x, y = rng.randrange(cols), rng.randrange(rows)
    dut, model = Router(p, x, y), RouterModel(p, x, y)
    offer_p, ready_p = rng.uniform(0.2, 0.9), rng.uniform(0.2, 1.0)
    cycles = 400
    seen = {"out": 0}

    async def bench(ctx):
        offered = [None] * N
        for cycle in range(cycles):
            for i in range(N):
                if offered[i] is None and rng.random() < offer_p:
                    offered[i] = (rng.randrange(1, 1 << p.n_tiles), rng.randrange(1 << 12))
                f = offered[i]
                ctx.set(dut.i[i].valid, f is not None)
                if f is not None:
                    ctx.set(dut.i[i].payload.dst, f[0])
                    ctx.set(dut.i[i].payload.payload, f[1])
            out_ready = [rng.random() < ready_p for _ in range(N)]
            for o in range(N):
                ctx.set(dut.o[o].ready, out_ready[o])
            want_ready, want_out = model.outputs()
            got_ready = [bool(ctx.get(dut.i[i].ready)) for i in range(N)]
            got_out = [(ctx.get(dut.o[o].payload.dst), ctx.get(dut.o[o].payload.payload))
                       if ctx.get(dut.o[o].valid) else None for o in range(N)]
            assert got_ready == want_ready, (seed, cycle)
            assert got_out == want_out, (seed, cycle)
            seen["out"] += sum(f is not None and r for f, r in zip(got_out, out_ready))
            took, _ = model.step(offered, out_ready)
            offered = [None if t else f for f, t in zip(offered, took)]
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen["out"] > 20, seed       # the run moved flits


def _traffic(rng, p, n_flits):
    """Per tile, its flits: (dst set, payload), the payload naming the source and a sequence."""
    flits = [[] for _ in range(p.n_tiles)]
    for seq in range(n_flits):
        src = rng.randrange(p.n_tiles)
        dst = rng.randrange(1, 1 << p.n_tiles)
        flits[src].append((dst, src << 10 | len(flits[src])))
    return flits


def _check_delivery(p, flits, got):
    """Each tile got, in order per source, exactly the flits whose set names it, each with its
    own bit as the whole destination set."""
    for t in range(p.n_tiles):
        for src in range(p.n_tiles):
            want = [pay for dst, pay in flits[src] if dst >> t & 1]
            have = [pay for dst, pay in got[t] if pay >> 10 == src]
            assert have == want, (t, src)
        assert all(dst == 1 << t for dst, _ in got[t]), t


def run_mesh_model(p, flits, rng, inject_p, eject_p, limit):
    model = MeshModel(p)
    queues = [list(f) for f in flits]
    got = [[] for _ in range(p.n_tiles)]
    total = sum(len(q) for q in queues)
    delivered_want = sum(bin(d).count("1") for f in flits for d, _ in f)
    cycle = 0
    while sum(len(g) for g in got) < delivered_want:
        assert cycle < limit, f"not drained after {limit} cycles"
        offered = [q[0] if q and rng.random() < inject_p else None for q in queues]
        ready = [rng.random() < eject_p for _ in range(p.n_tiles)]
        _, out = model.outputs()
        for t in range(p.n_tiles):
            if out[t] is not None and ready[t]:
                got[t].append(out[t])
        injected, _ = model.step(offered, ready)
        for t in range(p.n_tiles):
            if injected[t]:
                queues[t].pop(0)
        cycle += 1
    assert total == 0 or not any(queues)
    return got, cycle


@pytest.mark.parametrize("cols, rows", [(1, 1), (4, 1), (1, 4), (2, 2), (3, 3), (4, 4)])
def test_mesh_model_delivers_every_flit_once_in_order_and_drains(seed, cols, rows):
    """Twin only, so it can be large: many random multicast flits, heavy random stalls on every
    tile's output; every flit reaches every tile of its set once, per source in order, and the
    mesh drains (deadlock freedom, docs/architecture.md)."""
    rng = random.Random(seed)
    p = MeshParams(cols=cols, rows=rows, payload_bits=16, depth=rng.randint(1, 3))
    flits = _traffic(rng, p, 300)
    got, cycles = run_mesh_model(p, flits, rng, rng.uniform(0.3, 1.0), rng.uniform(0.05, 1.0),
                                 limit=200_000)
    _check_delivery(p, flits, got)


def test_two_cycles_per_router():
    """Hand-counted: tile 0 of a 3 x 1 mesh sends one flit to all three tiles at cycle 0; the
    FIFO and the output register make 2 cycles per router, so tile t sees it at cycle 2 + 2t."""
    p = MeshParams(cols=3, rows=1, payload_bits=8)
    model = MeshModel(p)
    seen = {}
    for cycle in range(12):
        _, out = model.outputs()
        for t, f in enumerate(out):
            if f is not None:
                seen.setdefault(t, (cycle, f))
        model.step([(0b111, 5) if cycle == 0 else None, None, None], [True] * 3)
    assert seen == {0: (2, (0b001, 5)), 1: (4, (0b010, 5)), 2: (6, (0b100, 5))}


def test_mesh_matches_its_twin_cycle_for_cycle(seed):
    """The Amaranth mesh (2 x 2 or 3 x 2) and its twin under random multicast traffic and random
    eject stalls: every inject ready and eject flit equal in every cycle, and the flits arrive
    as the delivery rules say."""
    rng = random.Random(seed)
    cols, rows = rng.choice([(2, 2), (3, 2), (1, 3)])
    p = MeshParams(cols=cols, rows=rows, payload_bits=16, depth=rng.randint(1, 2))
    dut, model = Mesh(p), MeshModel(p)
    flits = _traffic(rng, p, 60)
    queues = [list(f) for f in flits]
    got = [[] for _ in range(p.n_tiles)]
    want_total = sum(bin(d).count("1") for f in flits for d, _ in f)
    inject_p, eject_p = rng.uniform(0.3, 1.0), rng.uniform(0.2, 1.0)
    state = {"cycles": 0}

    async def bench(ctx):
        offered = [None] * p.n_tiles
        while sum(len(g) for g in got) < want_total:
            assert state["cycles"] < 20_000, seed
            for t in range(p.n_tiles):
                if offered[t] is None and queues[t] and rng.random() < inject_p:
                    offered[t] = queues[t].pop(0)
                f = offered[t]
                ctx.set(dut.inject[t].valid, f is not None)
                if f is not None:
                    ctx.set(dut.inject[t].payload.dst, f[0])
                    ctx.set(dut.inject[t].payload.payload, f[1])
            ready = [rng.random() < eject_p for _ in range(p.n_tiles)]
            for t in range(p.n_tiles):
                ctx.set(dut.eject[t].ready, ready[t])
            want_ready, want_out = model.outputs()
            got_ready = [bool(ctx.get(dut.inject[t].ready)) for t in range(p.n_tiles)]
            got_out = [(ctx.get(dut.eject[t].payload.dst), ctx.get(dut.eject[t].payload.payload))
                       if ctx.get(dut.eject[t].valid) else None for t in range(p.n_tiles)]
            assert got_ready == want_ready, (seed, state["cycles"])
            assert got_out == want_out, (seed, state["cycles"])
            for t in range(p.n_tiles):
                if got_out[t] is not None and ready[t]:
                    got[t].append(got_out[t])
            injected, _ = model.step(offered, ready)
            offered = [None if i else f for f, i in zip(offered, injected)]
            state["cycles"] += 1
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    _check_delivery(p, flits, got)
