"""Cost of generating a core's Verilog (`Core(params)` + `amaranth.back.verilog.convert`) as the
synapse memory grows: the measurement behind the generator limits in snnc/hw/params.py
(`CORE_LIMITS`) and README "Limits today".

Each depth runs in a fresh process (peak memory is that process's `ru_maxrss`, plus the Yosys
child's); the core has 1,024 neurons and 1,088 sources, like a mid-sized MLP.

    .venv/bin/python benchmarks/core_generation.py [--entries 65536 262144 524288]
"""

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
from amaranth.back import verilog
from snnc.hw.core import Core
from snnc.hw.params import CoreParams
S = int(sys.argv[1])
p = CoreParams(max_neurons=1024, max_sources=1088, max_synapses=S, max_pops=4, max_pop_size=512,
               v_bits=20)
t = time.perf_counter()
text = verilog.convert(Core(p), name="snnc_core")
dt = time.perf_counter() - t
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
mem_bits = S * (p.tgt_bits + 8)
print(json.dumps({"entries": S, "seconds": dt, "peak_bytes": max(own, child),
                  "verilog_bytes": len(text), "synapse_memory_bits": mem_bits}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, nargs="+", default=[65536, 262144, 524288])
    args = ap.parse_args()
    print(f"{'entries':>9} {'seconds':>8} {'peak MB':>8} {'core.v MB':>9} {'bytes/mem bit':>13}")
    for s in args.entries:
        out = subprocess.run([sys.executable, "-c", CHILD, str(s)], check=True,
                             capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{s:>9,} {r['seconds']:>8.1f} {r['peak_bytes'] / 2**20:>8,.0f} "
              f"{r['verilog_bytes'] / 1e6:>9.1f} {r['peak_bytes'] / r['synapse_memory_bits']:>13.0f}",
              flush=True)


if __name__ == "__main__":
    main()
