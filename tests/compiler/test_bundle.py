"""Bundles: atomic writes, content hashes, refusal of damaged bundles (fuzzed), Ctrl-C safety."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

import snnc.compiler.bundle as bundle_mod
from snnc.cli import main
from snnc.compiler.bundle import (BundleError, _manifest_digest, check_bundle_target, file_digest,
                                  load_bundle, write_bundle)
from snnc.compiler.data import quantize_inputs
from snnc.compiler.pipeline import compile_model
from snnc.sim.reference import run


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """A tiny compiled MLP: model file, calibration data, and two compilations (4 and 8 bits)."""
    d = tmp_path_factory.mktemp("bundle")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    torch.export.save(torch.export.export(model, (torch.zeros(2, 6),)), d / "net.pt2")
    x = np.random.default_rng(0).random((30, 6))
    y = model(torch.from_numpy(x).float()).argmax(dim=1).numpy()
    np.savez(d / "calib.npz", x=x, y=y)
    nets = {b: compile_model(d / "net.pt2", bits=b, timesteps=3, max_strength=7,
                             calib=d / "calib.npz") for b in (4, 8)}
    write_bundle(d / "ref4", *nets[4])
    return d, nets, x


def listing(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def snapshot(root):
    return {p: (root / p).read_bytes() for p in listing(root) if (root / p).is_file()}


def test_manifest_lists_every_file_with_its_hash(compiled):
    d, _, _ = compiled
    m = json.loads((d / "ref4" / "manifest.json").read_text())
    assert m["format_version"] == 2
    files = [p for p in listing(d / "ref4") if (d / "ref4" / p).is_file()]
    assert sorted(m["files"]) == sorted(set(files) - {"manifest.json"})
    for name, entry in m["files"].items():
        assert entry["sha256"] == file_digest(d / "ref4" / name)
    assert m["manifest_sha256"] == _manifest_digest(m)


def test_rewrite_replaces_a_bundle_whole_and_leaves_no_temporaries(compiled, tmp_path):
    _, nets, _ = compiled
    write_bundle(tmp_path / "b", *nets[4])
    write_bundle(tmp_path / "b", *nets[8])
    assert load_bundle(tmp_path / "b").meta["bits"] == 8
    assert listing(tmp_path) == ["b"] + [f"b/{p}" for p in listing(tmp_path / "b")]


@pytest.mark.parametrize("where", ["write_hardware", "savez", "digest", "install"])
def test_interrupt_at_each_step_keeps_the_old_bundle(compiled, tmp_path, monkeypatch, where):
    _, nets, _ = compiled
    write_bundle(tmp_path / "b", *nets[4])
    before = snapshot(tmp_path / "b")

    def boom(*a, **k):
        raise KeyboardInterrupt
    import snnc.hw.mapping
    target = {"write_hardware": (snnc.hw.mapping, "write_hardware"),
              "savez": (bundle_mod.np, "savez_compressed"),
              "digest": (bundle_mod, "file_digest"), "install": (bundle_mod, "_install")}[where]
    monkeypatch.setattr(*target, boom)
    with pytest.raises(KeyboardInterrupt):
        write_bundle(tmp_path / "b", *nets[8])
    assert snapshot(tmp_path / "b") == before
    assert listing(tmp_path) == ["b"] + [f"b/{p}" for p in listing(tmp_path / "b")]


def test_refused_targets_are_left_untouched(compiled, tmp_path):
    _, nets, _ = compiled
    (tmp_path / "file.txt").write_text("mine")
    with pytest.raises(BundleError, match="is not a directory"):
        write_bundle(tmp_path / "file.txt", *nets[4])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "core.v").write_text("my own verilog")
    with pytest.raises(BundleError, match="not empty and is not an snnc bundle.*core.v"):
        write_bundle(tmp_path / "mine", *nets[4])
    assert (tmp_path / "mine" / "core.v").read_text() == "my own verilog"
    write_bundle(tmp_path / "b", *nets[4])
    (tmp_path / "b" / "notes.txt").write_text("keep me")
    with pytest.raises(BundleError, match="files snnc did not write.*notes.txt"):
        write_bundle(tmp_path / "b", *nets[8])
    assert (tmp_path / "b" / "notes.txt").read_text() == "keep me"
    for bad in ("", ".", ".."):
        with pytest.raises(BundleError):
            check_bundle_target(bad)
    with pytest.raises(BundleError, match="not writable"):
        check_bundle_target("/proc/snnc-no-such-dir/out")
    (tmp_path / "empty").mkdir()
    write_bundle(tmp_path / "empty", *nets[4])          # an empty directory is fine
    assert load_bundle(tmp_path / "empty").meta["bits"] == 4


def test_damaged_bundles_are_refused_naming_the_file(compiled, tmp_path):
    d, _, _ = compiled
    cases = {
        "core.v": lambda b: (b / "core.v").write_text((b / "core.v").read_text()[:500]),
        "mem/wgt.hex": lambda b: (b / "mem" / "wgt.hex").unlink(),
        "mem": lambda b: shutil.rmtree(b / "mem"),
        "arrays.npz": lambda b: (b / "arrays.npz").write_bytes(b"PK" + b"\0" * 10),
        "manifest.json": lambda b: (b / "manifest.json").write_text(
            (b / "manifest.json").read_text().replace('"theta": ', '"theta": 1', 1)),
    }
    for name, damage in cases.items():
        b = tmp_path / name.replace("/", "_")
        shutil.copytree(d / "ref4", b)
        damage(b)
        with pytest.raises(BundleError) as info:
            load_bundle(b)
        assert name.split("/")[0] in str(info.value) and "recompile" in str(info.value), name


def test_mixed_bundle_is_refused(compiled, tmp_path):
    """New mem/*.hex under an old manifest (what an interrupted non-atomic write left)."""
    d, nets, _ = compiled
    write_bundle(tmp_path / "new", *nets[8])
    shutil.copytree(d / "ref4", tmp_path / "mixed")
    for f in ("wgt.hex", "bias.hex"):
        shutil.copy(tmp_path / "new" / "mem" / f, tmp_path / "mixed" / "mem" / f)
    with pytest.raises(BundleError, match=r"mem/(wgt|bias)\.hex does not match"):
        load_bundle(tmp_path / "mixed")


def _mutate(rng, data: bytes) -> tuple[bytes, str]:
    if len(data) == 0 or rng.random() < 0.3:
        n = int(rng.integers(0, max(1, len(data))))
        return data[:n], f"truncated to {n} bytes"
    buf = bytearray(data)
    i = int(rng.integers(0, len(buf)))
    if rng.random() < 0.5:
        buf[i] ^= 1 << int(rng.integers(0, 8))
    else:
        buf[i] = int(rng.integers(0, 256))
    return bytes(buf), f"byte {i} changed"


def test_fuzzed_bundles_give_a_clean_refusal_or_the_unchanged_result(compiled, tmp_path, capsys,
                                                                     seed):
    """Random byte flips and truncations of every bundle file: `snnc simulate` refuses cleanly
    (exit 2, no traceback) or prints exactly the original result."""
    d, _, x = compiled
    rng = np.random.default_rng(seed)
    ref = load_bundle(d / "ref4")
    want = run(ref.graph, quantize_inputs(x, ref.meta)).prediction.tolist()
    files = [p for p in listing(d / "ref4") if (d / "ref4" / p).is_file()]
    outcomes = {"refused": 0, "unchanged": 0}
    for i in range(12 * len(files)):
        name = files[i % len(files)]
        b = tmp_path / f"f{i}"
        shutil.copytree(d / "ref4", b)
        data, how = _mutate(rng, (b / name).read_bytes())
        (b / name).write_bytes(data)
        code = main(["simulate", str(b), "--data", str(d / "calib.npz"),
                     "--json", str(tmp_path / "r.json")])
        out, err = capsys.readouterr()
        assert "Traceback" not in err, (name, how, err)
        if code == 2:
            assert err.startswith("snnc: error: "), (name, how, err)
            outcomes["refused"] += 1
        else:
            assert code == 0, (name, how, out, err)
            doc = json.loads((tmp_path / "r.json").read_text())
            assert doc["predictions"] == want, (name, how)
            outcomes["unchanged"] += 1
        shutil.rmtree(b)
    print(outcomes)
    assert outcomes["refused"] >= len(files)


def _start_and_wait_for_write(cmd, parent, name):
    """Start ``cmd`` in its own process group; return it and the time its bundle write began
    (the hidden temporary directory appeared beside the target)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    while proc.poll() is None and not list(parent.glob(f".{name}.tmp-*")):
        time.sleep(0.002)
    return proc, time.perf_counter()


def test_sigint_during_compile_leaves_old_or_new_bundle(compiled, tmp_path, seed):
    """`snnc compile` over an existing bundle, interrupted with SIGINT (as Ctrl-C: the whole
    process group) at random moments while it writes the bundle: afterwards the old bundle is
    intact or the new one is complete, and no temporary directory is left."""
    d, nets, _ = compiled
    out = tmp_path / "b"
    write_bundle(out, *nets[8])
    old = snapshot(out)
    cmd = [sys.executable, "-m", "snnc", "compile", str(d / "net.pt2"), "--bits", "4", "-T", "3",
           "-S", "7", "--calib", str(d / "calib.npz"), "-o", str(out)]
    proc, t_write = _start_and_wait_for_write(cmd, tmp_path, "b")
    proc.communicate(timeout=120)
    write = time.perf_counter() - t_write
    assert proc.returncode == 0 and load_bundle(out).meta["bits"] == 4
    rng = np.random.default_rng(seed)
    seen = []
    for delay in rng.uniform(0.0, 1.2 * write, size=4):
        write_bundle(out, *nets[8])
        proc, _ = _start_and_wait_for_write(cmd, tmp_path, "b")
        time.sleep(delay)
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        _, err = proc.communicate(timeout=120)
        assert b"Traceback" not in err, err.decode()
        bits = load_bundle(out).meta["bits"]   # every file matches the manifest: not mixed
        state = {8: "old", 4: "new"}[bits]
        if state == "old":
            assert snapshot(out) == old, delay
        assert listing(tmp_path) == ["b"] + [f"b/{p}" for p in listing(out)], delay
        seen.append((round(delay, 3), state, proc.returncode))
    print(f"bundle write takes {write:.2f} s; (delay, outcome, exit status): {seen}")


def test_a_bundle_from_before_the_layout_was_recorded_lists_conv_taps_per_channel(tmp_path):
    """Bundles written before core.conv_lists existed hold per-channel lists: Bundle.image()
    maps them that way, so the cycle model counts the walk their images make."""
    import json
    from snnc.hw.mapping import map_graph
    from snnc.hw.params import CoreParams
    from snnc.testing import random_conv_graph, reseal_bundle
    g = random_conv_graph(np.random.default_rng(4))
    assert map_graph(g, "class").n_entries != map_graph(g, "channel").n_entries
    b = write_bundle(tmp_path / "b", g, conv_lists="channel")
    m = json.loads((b.path / "manifest.json").read_text())
    del m["core"]["conv_lists"]
    (b.path / "manifest.json").write_text(json.dumps(m))
    reseal_bundle(b.path)
    old = load_bundle(b.path)
    assert old.conv_lists == "channel"
    image = old.image()
    assert np.array_equal(image.tgt_words(CoreParams(**old.core["params"])),
                          map_graph(g, "channel").tgt_words(CoreParams(**old.core["params"])))
    with pytest.raises(ValueError, match="conv_lists must be one of class, channel"):
        write_bundle(tmp_path / "c", g, conv_lists="rows")
