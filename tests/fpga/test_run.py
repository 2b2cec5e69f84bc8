"""`snnc run-board` against the simulated board (the real gateware behind a UART model)."""

import json

import numpy as np

import snnc.fpga.host as host
from snnc.cli import main
from snnc.compiler.bundle import write_bundle
from snnc.testing import random_graph, reseal_bundle


def _setup(tmp_path, monkeypatch, seed, wrong_image=False):
    from snnc.fpga.simboard import SimBoard
    from snnc.hw.params import CoreParams
    from snnc.ir import Dense, Graph, InputPopulation, Population
    rng = np.random.default_rng(seed)
    if wrong_image:            # every weight used by every sample, so a wrong one must show
        w = rng.integers(1, 60, (3, 4)) * rng.choice([-1, 1], (3, 4))
        g = Graph(InputPopulation("in", (4,), False),
                  (Population("o", 3, np.zeros(3, np.int64), 1, 1, -10**6, 10**6, False),),
                  (Dense(0, 1, w, 8),), timesteps=2)
    else:
        g = random_graph(rng, max_in=4, max_size=4, bits=8, timesteps=2)
    b = write_bundle(tmp_path / "bundle", g, {"input_scale": 1.0,
                                              "input_signed": g.input.signed})
    lo = -127 if g.input.signed else 0
    np.savez(tmp_path / "x.npz", x=rng.integers(max(lo, 1), 128, (3, g.input.size)).astype(float))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "build.json").write_text(json.dumps(
        {"bundle": str(tmp_path / "bundle"), "baud": 1_000_000}))
    params = CoreParams(**b.core["params"])
    monkeypatch.setattr(host, "open_serial", lambda port, baud, **kw: host.BoardClient(
        SimBoard(params, baud=baud), baud=baud, **kw))
    return g


def test_run_board_is_bit_exact_against_the_reference(tmp_path, monkeypatch, capsys, seed):
    _setup(tmp_path, monkeypatch, seed)
    code = main(["run-board", str(tmp_path / "out"), "--port", "sim", "--data",
                 str(tmp_path / "x.npz"), "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 0 and "3/3 samples bit-exact -> BIT-EXACT" in out, out
    assert json.loads((tmp_path / "r.json").read_text())["all_exact"]


def test_run_board_reports_a_wrong_image(tmp_path, monkeypatch, capsys, seed):
    _setup(tmp_path, monkeypatch, seed, wrong_image=True)
    wgt = tmp_path / "bundle" / "mem" / "wgt.hex"
    wgt.write_text("".join(f"{int(w, 16) ^ 0x11:02x}\n" for w in wgt.read_text().split()))
    reseal_bundle(tmp_path / "bundle")
    code = main(["run-board", str(tmp_path / "out"), "--port", "sim", "--data",
                 str(tmp_path / "x.npz")])
    out = capsys.readouterr().out
    assert code == 1 and "MISMATCH" in out, out


def test_run_board_errors(tmp_path, capsys):
    assert main(["run-board", str(tmp_path), "--port", "x", "--data", "d.npz"]) == 2
    assert "not a build directory" in capsys.readouterr().err
    assert main(["run-board", str(tmp_path), "--port", "x", "--data", "d.npz",
                 "--timeout", "0"]) == 2
