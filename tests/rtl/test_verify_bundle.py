"""`snnc verify` on bundles written straight from IR graphs (conv, max-pool, residual)."""

import json

import numpy as np
import pytest

from snnc.cli import main
from snnc.compiler.bundle import write_bundle
from snnc.testing import random_conv_graph, reseal_bundle

pytestmark = pytest.mark.verilator


def test_verify_conv_bundle_on_both_simulators(simulator, tmp_path, capsys, seed):
    rng = np.random.default_rng(seed)
    g = random_conv_graph(rng, max_hw=6, timesteps=2)
    write_bundle(tmp_path / "b", g)
    code = main(["verify", str(tmp_path / "b"), "--samples", "3", "--seed", str(seed),
                 "--stall", "0.25", "--simulator", simulator, "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["all_exact"] and [s["exact"] for s in doc["samples"]] == [True] * 3
    assert all(s["cycles"] == s["rtl_active_cycles"] for s in doc["samples"])


def test_verify_loads_the_bundles_own_memory_images(verilator, tmp_path, capsys, seed):
    """A wrong weight image (consistent hashes) is run as it is, and verify reports MISMATCH."""
    from snnc.ir import Dense, Graph, InputPopulation, Population
    rng = np.random.default_rng(seed)
    w = rng.integers(1, 60, (3, 4)) * rng.choice([-1, 1], (3, 4))        # no zero weight
    g = Graph(InputPopulation("in", (4,), False),
              (Population("o", 3, np.zeros(3, np.int64), 1, 1, -10**6, 10**6, False),),
              (Dense(0, 1, w, 8),), timesteps=2)
    write_bundle(tmp_path / "b", g)
    words = (tmp_path / "b" / "mem" / "wgt.hex").read_text().split()
    words = [f"{int(w, 16) ^ 0x40:02x}" for w in words]          # change every weight
    (tmp_path / "b" / "mem" / "wgt.hex").write_text("".join(w + "\n" for w in words))
    reseal_bundle(tmp_path / "b")
    # verify's random inputs for --seed s are random_inputs(default_rng(s), ...); some samples
    # are all zero, and a sample without input uses no weight (CI, seed 744715424: all four
    # were): take the first seed from ours whose samples all have an input
    from snnc.testing import random_inputs
    vseed = next(s for s in range(seed, seed + 1000)
                 if (random_inputs(np.random.default_rng(s), g, 4) != 0).any(axis=1).all())
    code = main(["verify", str(tmp_path / "b"), "--samples", "4", "--seed", str(vseed)])
    out = capsys.readouterr().out
    assert code == 1 and "MISMATCH" in out, out


def test_verify_reports_a_broken_core_cleanly(verilator, tmp_path, capsys):
    """Defect 14: a truncated core.v (hashes made consistent) ends in one clear error."""
    from snnc.testing import random_graph
    g = random_graph(np.random.default_rng(3), max_in=4, max_size=4, bits=8, timesteps=2)
    write_bundle(tmp_path / "b", g)
    text = (tmp_path / "b" / "core.v").read_text()
    (tmp_path / "b" / "core.v").write_text(text[:len(text) // 2])
    assert main(["verify", str(tmp_path / "b"), "--samples", "1"]) == 2
    err = capsys.readouterr().err
    assert "core.v does not match" in err and "Traceback" not in err
    reseal_bundle(tmp_path / "b")
    assert main(["verify", str(tmp_path / "b"), "--samples", "1"]) == 2
    err = capsys.readouterr().err
    assert "snnc: error: verilator rejected the core" in err and "Traceback" not in err
    assert err.splitlines()[0].startswith("snnc: error:") or "\rsnnc: error" not in err


def test_ctrl_c_during_verify_leaves_no_temporary_files(verilator, tmp_path, seed):
    """Defect 12: Ctrl-C (SIGINT to the process group) during the RTL run removes the cocotb
    work directory (snnc-rtl-* in TMPDIR)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from snnc.testing import random_graph
    g = random_graph(np.random.default_rng(5), max_in=8, max_size=8, bits=8, timesteps=4)
    write_bundle(tmp_path / "b", g)
    assert main(["verify", str(tmp_path / "b"), "--samples", "1"]) == 0     # build cached
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp))
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "snnc", "verify", str(tmp_path / "b"),
                                 "--samples", "400"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.time() + 120
        while not list(tmp.glob("snnc-rtl-*")) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert b"Traceback" not in err, err.decode()
        assert proc.returncode in (130, -signal.SIGINT), (proc.returncode, err.decode())
        assert list(tmp.glob("snnc-rtl-*")) == [], attempt


def test_fuzzed_bundles_and_verify(verilator, tmp_path, capsys, seed):
    """Random byte flips and truncations of every bundle file, then `snnc verify`: a clean
    refusal (exit 2, no traceback) or the correct result (exit 0, bit-exact)."""
    import shutil
    from snnc.testing import random_graph
    rng = np.random.default_rng(seed)
    g = random_graph(np.random.default_rng(11), max_in=6, max_size=6, bits=4, timesteps=2)
    write_bundle(tmp_path / "ref", g)
    files = sorted(p.relative_to(tmp_path / "ref").as_posix()
                   for p in (tmp_path / "ref").rglob("*") if p.is_file())
    outcomes = []
    for i in range(3 * len(files)):
        name = files[i % len(files)]
        b = tmp_path / f"f{i}"
        shutil.copytree(tmp_path / "ref", b)
        data = (b / name).read_bytes()
        if rng.random() < 0.3 or not data:
            data = data[:int(rng.integers(0, max(1, len(data))))]
        else:
            buf = bytearray(data)
            buf[int(rng.integers(0, len(buf)))] ^= 1 << int(rng.integers(0, 8))
            data = bytes(buf)
        (b / name).write_bytes(data)
        code = main(["verify", str(b), "--samples", "2"])
        out, err = capsys.readouterr()
        assert "Traceback" not in err, (name, err)
        assert code == 2 and err.startswith("snnc: error: ") or code == 0 and "BIT-EXACT" in out, \
            (name, code, out, err)
        outcomes.append(code)
        shutil.rmtree(b)
    print(f"refused {outcomes.count(2)}, unchanged {outcomes.count(0)}")
