"""`snnc run-board` against the simulated board (the real gateware behind a UART model), and
which configuration writes it sends to a bitstream that holds a network."""

import json

import numpy as np
import pytest

import snnc.fpga.host as host
from snnc.cli import main
from snnc.compiler.bundle import load_bundle, write_bundle
from snnc.fpga.protocol import Cmd, FrameParser
from snnc.fpga.run import load_plan
from snnc.hw.images import config_writes_from_images
from snnc.hw.mapping import config_writes, map_graph
from snnc.testing import random_graph, reseal_bundle


def _setup(tmp_path, monkeypatch, seed, wrong_image=False, bitstream=None):
    """A bundle, samples, a build.json and a simulated board behind ``open_serial``; the
    boards made are returned. With ``bitstream`` ("same" or "other"), the board's bitstream
    holds a network, and build.json says so: this bundle's, or another bundle's (the same
    layers with every weight negated: any sample shows which network ran)."""
    from snnc.fpga.build import network_in_bitstream
    from snnc.fpga.simboard import SimBoard
    from snnc.hw.params import CoreParams
    from snnc.ir import Dense, Graph, InputPopulation, Population
    rng = np.random.default_rng(seed)
    if wrong_image or bitstream:   # every weight used by every sample, so a wrong one must show
        w = rng.integers(1, 60, (3, 4)) * rng.choice([-1, 1], (3, 4))
        g = Graph(InputPopulation("in", (4,), False),
                  (Population("o", 3, np.zeros(3, np.int64), 1, 1, -10**6, 10**6, False),),
                  (Dense(0, 1, w, 8),), timesteps=2)
    else:
        g = random_graph(rng, max_in=4, max_size=4, bits=8, timesteps=2)
    meta = {"input_scale": 1.0, "input_signed": g.input.signed}
    b = write_bundle(tmp_path / "bundle", g, meta)
    lo = -127 if g.input.signed else 0
    np.savez(tmp_path / "x.npz", x=rng.integers(max(lo, 1), 128, (3, g.input.size)).astype(float))
    (tmp_path / "out").mkdir()
    build = {"bundle": str(tmp_path / "bundle"), "baud": 1_000_000}
    params = CoreParams(**b.core["params"])
    network = None
    if bitstream:
        held = b if bitstream == "same" else write_bundle(
            tmp_path / "other", g.replace(projections=(Dense(0, 1, -w, 8),)), meta)
        assert CoreParams(**held.core["params"]) == params
        network = config_writes(map_graph(held.graph), params, g.timesteps)
        build["network_in_bitstream"] = network_in_bitstream(held, frozenset())
    (tmp_path / "out" / "build.json").write_text(json.dumps(build))
    boards = []

    def open_sim(port, baud, **kw):
        # (4 clock cycles per bit, the UART's least, halve the simulated cycles)
        boards.append(SimBoard(params, baud=baud, network=network,
                               clk_hz=4 * baud if bitstream else None))
        return host.BoardClient(boards[-1], baud=baud, **kw)

    monkeypatch.setattr(host, "open_serial", open_sim)
    return boards


def test_run_board_is_bit_exact_against_the_reference(tmp_path, monkeypatch, capsys, seed):
    _setup(tmp_path, monkeypatch, seed)
    code = main(["run-board", str(tmp_path / "out"), "--port", "sim", "--data",
                 str(tmp_path / "x.npz"), "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 0 and "3/3 samples bit-exact -> BIT-EXACT" in out, out
    assert "the bitstream holds no network" in out
    assert json.loads((tmp_path / "r.json").read_text())["all_exact"]


@pytest.mark.parametrize("bitstream, reload", [("same", False), ("other", False),
                                               ("same", True)])
def test_run_board_sends_only_what_the_board_does_not_hold(tmp_path, monkeypatch, capsys,
                                                               seed, bitstream, reload):
    """The writes on the wire: none when the bitstream holds this very bundle; all of them
    when it holds another bundle's network (which the results prove was replaced) or with
    --reload."""
    boards = _setup(tmp_path, monkeypatch, seed, bitstream=bitstream)
    code = main(["run-board", str(tmp_path / "out"), "--port", "sim", "--data",
                 str(tmp_path / "x.npz"), "-n", "1", "--json", str(tmp_path / "r.json")]
                + ["--reload"] * reload)
    out = capsys.readouterr().out
    assert code == 0 and "1/1 samples bit-exact -> BIT-EXACT" in out, out
    (board,) = boards
    records = [len(payload) // board.top.layout.record_bytes
               for c, payload in FrameParser().feed(bytes(board.sent)) if c == Cmd.CONFIG]
    load = json.loads((tmp_path / "r.json").read_text())["load"]
    total = len(config_writes_from_images(tmp_path / "bundle", load_bundle(
        tmp_path / "bundle").core, board.top.params, 2))
    assert load["writes_total"] == total
    if bitstream == "same" and not reload:
        assert records == [] and load["writes_sent"] == 0 and load["built_in"]
        assert "the bitstream holds this bundle's network" in out
        assert f"no configuration writes sent (all {total} held)" in out
    else:
        assert sum(records) == load["writes_sent"] == total and not load["built_in"]
        assert ("--reload: loading all" if reload else
                "the bitstream holds another bundle's network") in out


def test_load_plan(tmp_path, seed):
    """Which writes run-board sends, from build.json's network_in_bitstream."""
    from snnc.fpga.build import network_in_bitstream
    from snnc.hw.params import CfgSel, CoreParams
    from snnc.testing import random_conv_graph
    g = random_conv_graph(np.random.default_rng(seed), max_hw=5, timesteps=2)
    b = load_bundle(write_bundle(tmp_path / "b", g).path)
    image = map_graph(g)
    writes = config_writes(image, CoreParams(**b.core["params"]), 2)
    sha = b.manifest_sha256

    def plan(spram=(), **kw):
        return load_plan(writes, {"network_in_bitstream": network_in_bitstream(b, spram)},
                         sha, **kw)

    p = plan()
    assert (p.writes, p.total, p.built_in) == ([], len(writes), True)
    p = plan({"tgt"})                                # on SPRAM: only its entries go
    assert p.writes == [w for w in writes if w[0] == CfgSel.TGT] and p.built_in
    assert len(p.writes) == image.n_entries and "tgt on SPRAM" in p.message
    p = plan({"ptr", "bias"})
    assert len(p.writes) == image.n_sources + image.n_neurons
    record = {"network_in_bitstream": dict(network_in_bitstream(b, ()), registers=False)}
    p = load_plan(writes, record, sha)
    assert p.writes == [w for w in writes if w[0] in (CfgSel.PARAM, CfgSel.CONV,
                                                      CfgSel.GLOBAL)]
    assert "the registers" in p.message
    for build, kw, says in (({}, {}, "holds no network"),
                            ({"network_in_bitstream": network_in_bitstream(b, ())},
                             {"reload": True}, "--reload"),
                            ({"network_in_bitstream": dict(network_in_bitstream(b, ()),
                                                           bundle_manifest_sha256="0" * 64)},
                             {}, "another bundle's network")):
        p = load_plan(writes, build, sha, **kw)
        assert (p.writes, p.built_in) == (writes, False) and says in p.message


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
    (tmp_path / "build.json").write_text(json.dumps({"bundle": str(tmp_path / "gone"),
                                                     "baud": 115200}))
    assert main(["run-board", str(tmp_path), "--port", "x", "--data", "d.npz"]) == 2
    assert "names the bundle" in capsys.readouterr().err
    assert main(["run-board", str(tmp_path), "--port", "x", "--data", "d.npz",
                 "--timeout", "0"]) == 2
