"""cocotb test module: drives the generated core (``snnc_core``) through a job file.

The job (JSON, path in ``SNNC_JOB``) lists networks, each with its configuration writes and its
samples; this module loads every network into the same simulated core, runs each sample (input
events per timestep, end-of-timestep tokens), records every output event, the membranes read back
through the readback port and the counters, and writes them to ``SNNC_RESULT``. The comparison
against the reference and the cycle model happens in the calling process
(:mod:`snnc.rtl.verify`), which can then name the first mismatch exactly.

Inputs change on the falling clock edge; handshakes are sampled in the read-only phase after the
inputs settle, and take effect at the next rising edge.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly


def _u(handle) -> int:
    return int(handle.value)


class _Driver:
    def __init__(self, dut, widths: dict, rng: random.Random, idle: float, stall: float):
        self.dut = dut
        self.w = widths
        self.rng = rng
        self.idle = idle
        self.stall = stall
        self.cycles = 0

    async def cycle(self):
        await FallingEdge(self.dut.clk)
        self.cycles += 1

    async def configure(self, writes):
        dut = self.dut
        for sel, addr, data in writes:
            await self.cycle()
            dut.cfg_we.value = 1
            dut.cfg_sel.value = sel
            dut.cfg_addr.value = addr
            dut.cfg_data.value = data
        await self.cycle()
        dut.cfg_we.value = 0

    def _in_payload(self, index, value, eot):
        w = self.w
        value &= (1 << w["input_bits"]) - 1
        return index | (value << w["source_addr_bits"]) | (eot << (w["source_addr_bits"] + w["input_bits"]))

    def _out_fields(self, word):
        w = self.w
        pop = word & ((1 << w["pop_bits"]) - 1)
        word >>= w["pop_bits"]
        index = word & ((1 << w["local_bits"]) - 1)
        word >>= w["local_bits"]
        strength = word & ((1 << w["strength_bits"]) - 1)
        eot = (word >> w["strength_bits"]) & 1
        return pop, index, strength, eot

    async def reset(self):
        """Pulse the synchronous reset for two cycles (memories keep their contents)."""
        dut = self.dut
        dut.rst.value = 1
        dut.inp__valid.value = 0
        dut.out__ready.value = 0
        dut.start.value = 0
        await self.cycle()
        await self.cycle()
        dut.rst.value = 0

    async def run_sample(self, x, T, max_cycles, *, abort_after=None):
        dut = self.dut
        await self.cycle()
        dut.start.value = 1
        await self.cycle()
        dut.start.value = 0
        tokens = []
        for _ in range(T):
            tokens += [(i, v, 0) for i, v in enumerate(x) if v != 0] + [(0, 0, 1)]
        pos, t, events, n = 0, 0, [], 0
        while True:
            present = pos < len(tokens) and self.rng.random() >= self.idle
            if present:
                dut.inp__payload.value = self._in_payload(*tokens[pos])
            dut.inp__valid.value = int(present)
            ready = int(self.rng.random() >= self.stall)
            dut.out__ready.value = ready
            await ReadOnly()
            if present and _u(dut.inp__ready):
                pos += 1
            if ready and _u(dut.out__valid):
                pop, index, strength, eot = self._out_fields(_u(dut.out__payload))
                if eot:
                    t += 1
                else:
                    events.append([t, pop, index, strength])
            busy = _u(dut.busy)
            await self.cycle()
            n += 1
            if t == T and pos == len(tokens) and not busy:
                break
            if abort_after is not None and n >= abort_after:
                return events
            if n > max_cycles:
                raise AssertionError(f"the core did not finish in {max_cycles} cycles "
                                     f"(accepted {pos}/{len(tokens)} input tokens, {t}/{T} timesteps)")
        dut.inp__valid.value = 0
        dut.out__ready.value = 0
        return events

    async def readback(self, sel, addrs):
        """Read ``addrs`` through the registered readback port, one per cycle."""
        dut = self.dut
        addrs = list(addrs)
        out = []
        dut.rb_sel.value = sel
        for a in addrs:
            dut.rb_addr.value = a
            await self.cycle()
            out.append(_u(dut.rb_data))
        return out


@cocotb.test()
async def run_job(dut):
    """Run every network and sample of the job file and record what the core produced."""
    with open(os.environ["SNNC_JOB"]) as fh:
        job = json.load(fh)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for sig in (dut.cfg_we, dut.start, dut.inp__valid, dut.out__ready, dut.rb_sel, dut.rb_addr):
        sig.value = 0
    await FallingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    drv = _Driver(dut, job["widths"], random.Random(job["seed"]), job["idle"], job["stall"])
    results = []
    for net in job["networks"]:
        await drv.configure(net["writes"])
        if net.get("reset_after"):
            # Interrupt a run with a reset, then reload the configuration (the reset clears the
            # parameter registers) and carry on: results must equal those of a fresh core.
            await drv.run_sample(net["samples"][0], net["timesteps"], net["max_cycles"],
                                 abort_after=net["reset_after"])
            await drv.reset()
            await drv.configure(net["writes"])
        samples = []
        for x in net["samples"]:
            start = drv.cycles
            events = await drv.run_sample(x, net["timesteps"], net["max_cycles"])
            wall = drv.cycles - start
            v = await drv.readback(0, range(net["n_neurons"]))
            counters = await drv.readback(1, range(4 + net["n_pops"]))
            samples.append({"events": events, "v": v, "counters": counters, "wall_cycles": wall})
        results.append(samples)
    with open(os.environ["SNNC_RESULT"], "w") as fh:
        json.dump({"networks": results}, fh)
