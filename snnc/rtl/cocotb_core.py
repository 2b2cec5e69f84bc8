"""cocotb test module: drives the core through its verification harness (``snnc_tb``).

The job (JSON, path in ``SNNC_JOB``) lists networks, each with its configuration writes and its
samples. For each network this module loads the configuration into the core; for each sample it
writes the sample's input tokens into the harness, pulses ``go`` and waits for ``done`` (the
simulator runs freely meanwhile: no Python per clock cycle), then reads back every captured
output event, every membrane and every counter, and writes them to ``SNNC_RESULT``. The
comparison against the reference and the cycle model happens in the calling process
(:mod:`snnc.rtl.verify`), which names the first mismatch.

Inputs change on the falling clock edge; the design samples them on the rising edge.
"""

from __future__ import annotations

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge, Timer

PERIOD_NS = 10


def _u(handle) -> int:
    return int(handle.value)


class _Driver:
    def __init__(self, dut, widths: dict):
        self.dut = dut
        self.w = widths

    async def cycle(self):
        await FallingEdge(self.dut.clk)

    async def configure(self, writes):
        dut = self.dut
        for sel, addr, data in writes:
            dut.cfg_we.value = 1
            dut.cfg_sel.value = sel
            dut.cfg_addr.value = addr
            dut.cfg_data.value = data
            await self.cycle()
        dut.cfg_we.value = 0

    def _token(self, index, value):
        w = self.w
        value &= (1 << w["input_bits"]) - 1
        return index | (value << w["source_addr_bits"])

    def _out_fields(self, word):
        w = self.w
        pop = word & ((1 << w["pop_bits"]) - 1)
        word >>= w["pop_bits"]
        index = word & ((1 << w["local_bits"]) - 1)
        word >>= w["local_bits"]
        strength = word & ((1 << w["strength_bits"]) - 1)
        eot = (word >> w["strength_bits"]) & 1
        return pop, index, strength, eot

    async def start(self, x, T, job, seed):
        dut = self.dut
        tokens = [(i, v) for i, v in enumerate(x) if v != 0]
        for a, (i, v) in enumerate(tokens):
            dut.tok_we.value = 1
            dut.tok_addr.value = a
            dut.tok_data.value = self._token(i, v)
            await self.cycle()
        dut.tok_we.value = 0
        dut.tok_count.value = len(tokens)
        dut.timesteps.value = T
        dut.idle_thresh.value = min(255, int(round(job["idle"] * 256)))
        dut.stall_thresh.value = min(255, int(round(job["stall"] * 256)))
        dut.seed.value = seed & 0xFFFF
        dut.go.value = 1
        await self.cycle()
        dut.go.value = 0

    async def finish(self, max_cycles):
        dut = self.dut
        if not _u(dut.done):
            timeout = Timer(max_cycles * PERIOD_NS, unit="ns")
            if await First(RisingEdge(dut.done), timeout) is timeout:
                raise AssertionError(f"the core did not finish in {max_cycles} cycles")
            await self.cycle()
        if _u(dut.overflow):
            raise AssertionError("the harness event memory overflowed (raise max_events)")
        events, t = [], 0
        n = _u(dut.ev_count)
        for a in range(n):
            dut.ev_addr.value = a
            await self.cycle()
            pop, index, strength, eot = self._out_fields(_u(dut.ev_data))
            if eot:
                t += 1
            else:
                events.append([t, pop, index, strength])
        return events, _u(dut.wall_cycles)

    async def readback(self, sel, addrs):
        """Read ``addrs`` through the core's registered readback port, one per cycle."""
        dut = self.dut
        out = []
        dut.rb_sel.value = sel
        for a in addrs:
            dut.rb_addr.value = a
            await self.cycle()
            out.append(_u(dut.rb_data))
        return out

    async def reset(self):
        """Pulse the synchronous reset for two cycles (memories keep their contents)."""
        self.dut.rst.value = 1
        await self.cycle()
        await self.cycle()
        self.dut.rst.value = 0


@cocotb.test()
async def run_job(dut):
    """Run every network and sample of the job file and record what the core produced."""
    with open(os.environ["SNNC_JOB"]) as fh:
        job = json.load(fh)
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns", impl="gpi").start(start_high=False))
    dut.rst.value = 1
    for sig in (dut.cfg_we, dut.tok_we, dut.go, dut.rb_sel, dut.rb_addr, dut.ev_addr):
        sig.value = 0
    await FallingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    drv = _Driver(dut, job["widths"])
    results = []
    seed = job["seed"]
    for net in job["networks"]:
        await drv.configure(net["writes"])
        if net.get("reset_after"):
            # Interrupt a run with a reset, then reload the configuration (the reset clears the
            # parameter registers) and carry on: results must equal those of a fresh core.
            await drv.start(net["samples"][0], net["timesteps"], job, seed)
            await ClockCycles(dut.clk, net["reset_after"])
            await drv.cycle()
            await drv.reset()
            await drv.configure(net["writes"])
        samples = []
        for x in net["samples"]:
            seed += 1
            await drv.start(x, net["timesteps"], job, seed)
            events, wall = await drv.finish(net["max_cycles"])
            v = await drv.readback(0, range(net["n_neurons"]))
            counters = await drv.readback(1, range(4 + net["n_pops"]))
            samples.append({"events": events, "v": v, "counters": counters, "wall_cycles": wall})
        results.append(samples)
    with open(os.environ["SNNC_RESULT"], "w") as fh:
        json.dump({"networks": results}, fh)
