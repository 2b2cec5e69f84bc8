"""`snnc verify` on bundles written straight from IR graphs (conv, max-pool, residual)."""

import json

import numpy as np
import pytest

from snnc.cli import main
from snnc.compiler.bundle import write_bundle
from snnc.testing import random_conv_graph

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
