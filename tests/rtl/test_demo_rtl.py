"""The demo network on real digits test images: RTL vs reference vs cycle model, and the CLI."""

import json

import numpy as np
import pytest

from snnc.cli import main
from snnc.demo import demo_reference
from snnc.compiler.bundle import write_bundle
from snnc.testing import reseal_bundle
from snnc.rtl.verify import verify_on_rtl

pytestmark = pytest.mark.verilator


@pytest.fixture(scope="module")
def demo_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    r = demo_reference(out, bits=4, timesteps=4, max_strength=15)
    bundle = write_bundle(out / "bundle", r["graph"], r["meta"])
    return bundle, r


def test_demo_network_bit_exact_on_digits(verilator, demo_bundle):
    bundle, r = demo_bundle
    from snnc.sim.reference import run
    x = r["x_int"][:24]
    rep = verify_on_rtl(bundle, x, progress=False)
    assert rep.n_samples == 24 and rep.all_exact, rep.mismatches[:5]
    ref = run(bundle.graph, x)
    assert [s["prediction_rtl"] for s in rep.per_sample] == ref.prediction.tolist()
    assert all(s["rtl_active_cycles"] == s["cycles"] for s in rep.per_sample)


def test_verify_command(verilator, demo_bundle, tmp_path, capsys):
    bundle, r = demo_bundle
    data = tmp_path / "test.npz"
    np.savez(data, x=np.load(bundle.path.parent / "test.npz")["x"][:3])
    code = main(["verify", str(bundle.path), "--data", str(data), "--samples", "3",
                 "--stall", "0.3", "--json", str(tmp_path / "v.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "3/3 samples bit-exact" in out
    doc = json.loads((tmp_path / "v.json").read_text())
    assert doc["all_exact"] and len(doc["samples"]) == 3


def test_verify_names_a_timing_fault_and_keeps_waves(verilator, demo_bundle, tmp_path, capsys,
                                                     monkeypatch):
    """A core whose DRAIN phase is one cycle longer than the model says: results stay equal,
    the cycle count does not; verify must fail, say so, and keep the failing sample's VCD."""
    import dataclasses
    import shutil

    from amaranth.back import verilog

    import snnc.hw.core as core_mod
    from snnc.cli import _core_params
    bundle, _ = demo_bundle
    bad = tmp_path / "bad"
    shutil.copytree(bundle.path, bad)
    monkeypatch.setattr(core_mod, "TIMING", dataclasses.replace(core_mod.TIMING, drain=core_mod.TIMING.drain + 1))
    (bad / "core.v").write_text(verilog.convert(core_mod.Core(_core_params(bundle)), name="snnc_core"))
    monkeypatch.undo()
    reseal_bundle(bad)                  # past the integrity check: the RTL itself must be caught
    code = main(["verify", str(bad), "--samples", "2", "--waves", str(tmp_path / "w")])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "active cycles: expected" in out and "MISMATCH" in out
    vcd = list((tmp_path / "w").rglob("*.vcd"))
    assert vcd and vcd[0].stat().st_size > 0, out


def test_demo_cnn_bit_exact_on_digits(verilator, tmp_path_factory):
    """The demo CNN (conv, max-pool, residual block, avg-pool, linear) on real test images."""
    from snnc.demo import cnn_demo_reference
    from snnc.sim.reference import run
    out = tmp_path_factory.mktemp("cnn")
    r = cnn_demo_reference(out, bits=4, timesteps=2, table_bits=(4,), table_timesteps=(2,))
    bundle = write_bundle(out / "bundle", r["graph"], r["meta"])
    x = r["x_int"][:8]
    rep = verify_on_rtl(bundle, x, progress=False)
    assert rep.n_samples == 8 and rep.all_exact, rep.mismatches[:5]
    assert [s["prediction_rtl"] for s in rep.per_sample] == run(bundle.graph, x).prediction.tolist()
