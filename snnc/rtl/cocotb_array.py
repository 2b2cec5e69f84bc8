"""cocotb test module: drives the tile array through its harness (``snnc_array_tb``,
:mod:`snnc.rtl.array_harness`).

The job (JSON, path in ``SNNC_JOB``) lists networks, each with per-tile configuration writes,
routing-table writes and samples. For each network this module loads every tile and the tables;
for each sample it writes the input tokens, pulses ``go`` and waits for ``done`` (no Python per
clock cycle), then reads back every tile's captured events (with their cycles), membranes and
counters into ``SNNC_RESULT``. The comparison with the twin and the reference happens in the
calling process (:mod:`snnc.rtl.verify_array`).

Inputs change on the falling clock edge; the design samples them on the rising edge.
"""

from __future__ import annotations

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, First, RisingEdge, Timer

PERIOD_NS = 10


def _u(handle) -> int:
    return int(handle.value)


async def _cycle(dut):
    await FallingEdge(dut.clk)


async def _configure(dut, tiles_writes, tables):
    for t, writes in enumerate(tiles_writes):
        dut.cfg_tiles.value = 1 << t
        dut.cfg_we.value = 1
        for sel, addr, data in writes:
            dut.cfg_sel.value = sel
            dut.cfg_addr.value = addr
            dut.cfg_data.value = data
            await _cycle(dut)
        dut.cfg_we.value = 0
    dut.tbl_we.value = 1
    for tiles, sel, addr, data in tables:
        dut.cfg_tiles.value = tiles
        dut.tbl_sel.value = sel
        dut.tbl_addr.value = addr
        dut.tbl_data.value = data
        await _cycle(dut)
    dut.tbl_we.value = 0


async def _run_sample(dut, w, x, T, job, seed, max_cycles):
    tokens = [(i, v) for i, v in enumerate(x) if v != 0]
    for a, (i, v) in enumerate(tokens):
        dut.tok_we.value = 1
        dut.tok_addr.value = a
        dut.tok_data.value = i | ((v & ((1 << w["input_bits"]) - 1)) << w["index_bits"])
        await _cycle(dut)
    dut.tok_we.value = 0
    dut.tok_count.value = len(tokens)
    dut.timesteps.value = T
    dut.idle_thresh.value = min(255, int(round(job["idle"] * 256)))
    dut.seed.value = seed & 0xFFFF
    dut.go.value = 1
    await _cycle(dut)
    dut.go.value = 0
    if not _u(dut.done):
        timeout = Timer(max_cycles * PERIOD_NS, unit="ns")
        if await First(RisingEdge(dut.done), timeout) is timeout:
            raise AssertionError(f"the array did not finish in {max_cycles} cycles")
        await _cycle(dut)
    if _u(dut.overflow):
        raise AssertionError("an inbox or the harness's event memory overflowed")
    monitor = []
    for t in range(w["n_tiles"]):
        dut.ev_tile.value = t
        await _cycle(dut)
        events = []
        for a in range(_u(dut.ev_count)):
            dut.ev_addr.value = a
            await _cycle(dut)
            word = _u(dut.ev_data)
            cycle, word = word & 0xFFFFFFFF, word >> 32
            pop = word & ((1 << w["pop_bits"]) - 1)
            word >>= w["pop_bits"]
            index = word & ((1 << w["index_bits"]) - 1)
            word >>= w["index_bits"]
            strength = word & ((1 << w["strength_bits"]) - 1)
            eot = (word >> w["strength_bits"]) & 1
            events.append([cycle, pop, index, strength, eot])
        monitor.append(events)
    return monitor, _u(dut.wall_cycles)


async def _readback(dut, tile, sel, addrs):
    out = []
    dut.rb_tile.value = tile
    dut.rb_sel.value = sel
    for a in addrs:
        dut.rb_addr.value = a
        await _cycle(dut)
        out.append(_u(dut.rb_data))
    return out


@cocotb.test()
async def run_job(dut):
    """Run every network and sample of the job file and record what the array produced."""
    with open(os.environ["SNNC_JOB"]) as fh:
        job = json.load(fh)
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns", impl="gpi").start(start_high=False))
    dut.rst.value = 1
    for sig in (dut.cfg_we, dut.tbl_we, dut.tok_we, dut.go, dut.rb_sel, dut.rb_addr, dut.ev_addr,
                dut.ev_tile, dut.rb_tile, dut.cfg_tiles):
        sig.value = 0
    await FallingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    w = job["widths"]
    results = []
    seed = job["seed"]
    for net in job["networks"]:
        await _configure(dut, net["writes"], net["tables"])
        samples = []
        for x in net["samples"]:
            seed += 1
            monitor, wall = await _run_sample(dut, w, x, net["timesteps"], job, seed,
                                              net["max_cycles"])
            tiles = []
            for t, n_neurons in enumerate(net["n_neurons"]):
                v = await _readback(dut, t, 0, range(n_neurons))
                counters = await _readback(dut, t, 1, range(4 + net["n_pops"]))
                tiles.append({"v": v, "counters": counters})
            samples.append({"monitor": monitor, "tiles": tiles, "wall_cycles": wall})
        results.append(samples)
    with open(os.environ["SNNC_RESULT"], "w") as fh:
        json.dump({"networks": results}, fh)
