"""Reading a bundle's memory images back: the writes equal those mapped from the graph; the
initial contents of a core with a built-in network equal those writes applied."""

import re

import numpy as np
import pytest

from snnc.compiler.bundle import write_bundle
from snnc.compiler.errors import SnncError
from snnc.hw.images import ImageError, config_writes_from_images, initial_contents, read_hex
from snnc.hw.mapping import clear_length, config_writes, core_params_for, map_graph
from snnc.hw.params import CfgSel, ConvField, CoreParams, ParamField
from snnc.testing import random_conv_graph, random_graph


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_image_files_load_the_same_writes_as_the_graph(tmp_path, seed, kind):
    rng = np.random.default_rng(seed)
    for i in range(4):
        g = (random_graph(rng, residual=bool(i % 2)) if kind == "dense"
             else random_conv_graph(rng, max_hw=6, timesteps=2))
        b = write_bundle(tmp_path / f"b{i}", g)
        params = CoreParams(**b.core["params"])
        for T in sorted({1, g.timesteps}):
            got = config_writes_from_images(b.path, b.core, params, T)
            assert got == config_writes(map_graph(g), params, T), (i, T)


def test_malformed_images_are_refused(tmp_path):
    (tmp_path / "w.hex").write_text("0a\nzz\n")
    with pytest.raises(ImageError, match="line 2"):
        read_hex(tmp_path / "w.hex", 8)
    (tmp_path / "w.hex").write_text("1ff\n")
    with pytest.raises(ImageError, match="expected 2 hex digits"):
        read_hex(tmp_path / "w.hex", 8)
    (tmp_path / "w.hex").write_text("f\n")
    with pytest.raises(ImageError, match="does not fit 3 bits"):
        read_hex(tmp_path / "w.hex", 3)


def _apply(writes):
    """The writes applied to a dict model of the configuration port: (sel, addr) -> data, the
    last write to a place wins."""
    model = {}
    for sel, addr, data in writes:
        model[(sel, addr)] = data
    return model


def _word(data, bits, signed=False):
    data &= (1 << bits) - 1
    return data - (1 << bits) if signed and data >> (bits - 1) else data


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_initial_contents_equal_the_writes_applied(seed, kind):
    from amaranth.hdl import Shape

    from snnc.hw.core import _conv_layout, _global_widths, _param_layout
    rng = np.random.default_rng(seed)
    for i in range(4):
        g = (random_graph(rng, residual=bool(i % 2)) if kind == "dense"
             else random_conv_graph(rng, max_hw=6, timesteps=2))
        image = map_graph(g)
        params = core_params_for(image, timesteps=g.timesteps)
        writes = config_writes(image, params, g.timesteps)
        # A few writes again, out of order and with other data: the last one must win.
        extra = [writes[j] for j in rng.permutation(len(writes))[:5]]
        writes += [(s, a, int(rng.integers(0, 1 << 8))) for s, a, _ in extra] + extra[:2]
        got = initial_contents(writes, params)
        model = _apply(writes)
        for sel, name, bits, depth in ((CfgSel.PTR, "ptr", params.ptr_bits, params.max_sources),
                                       (CfgSel.TGT, "tgt", params.tgt_bits, params.max_synapses),
                                       (CfgSel.WGT, "wgt", 8, params.weight_depth),
                                       (CfgSel.BIAS, "bias", params.v_bits, params.max_neurons)):
            assert got.memories[name] == [_word(model.get((sel, a), 0), bits, name == "bias")
                                          for a in range(depth)], (i, name)
        for sel, records, fields, layout in (
                (CfgSel.PARAM, got.pops, ParamField, _param_layout(params)),
                (CfgSel.CONV, got.convs, ConvField, _conv_layout(params))):
            for k, rec in enumerate(records):
                want = {}
                for f in fields:
                    shape = Shape.cast(layout[f.name].shape)
                    want[f.name] = _word(model.get((sel, k * 16 + f), 0), shape.width,
                                         shape.signed)
                assert rec == want, (i, sel, k)
        assert got.global_regs == {name: _word(model[(CfgSel.GLOBAL, a)], bits) for a, (name, bits)
                                   in enumerate(_global_widths(params).items())}


def test_initial_contents_are_the_mapped_network(seed):
    """Independently of the port's arithmetic: the values are the mapper's own."""
    rng = np.random.default_rng(seed)
    g = random_conv_graph(rng, max_hw=6, timesteps=2)
    image = map_graph(g)
    params = core_params_for(image, timesteps=2)
    got = initial_contents(config_writes(image, params, 2), params)
    n = image.n_neurons
    assert got.memories["bias"][:n] == image.bias.tolist()
    assert got.memories["ptr"][:image.n_sources] == image.ptr_words(params).tolist()
    assert got.memories["tgt"][:image.n_entries] == image.tgt_words(params).tolist()
    assert got.memories["wgt"][:image.n_words] == image.wgt.tolist()
    assert not any(got.memories["bias"][n:])
    for k, pop in enumerate(image.pops[1:], start=1):     # (population 0's SIZE is cut)
        assert {f: got.pops[k][f] for f in ("NBASE", "SIZE", "THETA", "SMAX", "VMIN", "VMAX",
                                            "SPIKING", "SMAX_THETA", "SMODE", "GATE")} == \
            {f: pop[f] for f in ("NBASE", "SIZE", "THETA", "SMAX", "VMIN", "VMAX", "SPIKING",
                                 "SMAX_THETA", "SMODE", "GATE")}
    assert not any(any(rec.values()) for rec in got.pops[image.n_pops:])
    for j, cv in enumerate(image.convs):
        assert {k: got.convs[j][k] for k in cv} == cv
    assert got.global_regs == {"n_pops": image.n_pops, "timesteps": 2,
                               "n_clear": clear_length(image)}


def test_initial_contents_refuse_what_the_core_would_not_do():
    params = CoreParams(max_neurons=4, max_sources=4, max_synapses=8, max_pops=3,
                        max_pop_size=4, v_bits=12, max_convs=1)
    for write, why in (((CfgSel.TGT, 8, 0), "the tgt memory holds 8 words"),
                       ((CfgSel.PARAM, 3 * 16, 1), "the core has 3 population records"),
                       ((CfgSel.PARAM, 14, 1), "population field 14 does not exist"),
                       ((CfgSel.CONV, 16, 1), "the core has 1 convolution records"),
                       ((CfgSel.GLOBAL, 3, 1), "global registers are 0..2"),
                       ((CfgSel.VMEM, 0, 1), "membranes are cleared by every start"),
                       ((CfgSel.BIAS, 0, 1 << params.cfg_data_bits), "-bit data"),
                       ((CfgSel.BIAS, -1, 0), "-bit addresses")):
        with pytest.raises(SnncError, match=re.escape(why)):
            initial_contents([(CfgSel.BIAS, 0, 1), write], params)
    with pytest.raises(SnncError, match="configuration write 0 is"):
        initial_contents([(1, 2)], params)
    # Data wider than a field is cut as the port cuts it; the bias reads back signed.
    got = initial_contents([(CfgSel.BIAS, 1, 0xFFF), (CfgSel.PARAM, 16 + ParamField.SMAX, 0xFF),
                            (CfgSel.PARAM, 16 + ParamField.VMIN, 0x800)], params)
    assert got.memories["bias"] == [0, -1, 0, 0]
    assert got.pops[1]["SMAX"] == 0xF and got.pops[1]["VMIN"] == -2048


def test_a_core_refuses_a_network_it_cannot_hold():
    from snnc.hw.core import Core
    params = CoreParams(max_neurons=4, max_sources=4, max_synapses=8, max_pops=3,
                        max_pop_size=4, v_bits=12)
    with pytest.raises(SnncError, match="the wgt memory holds 8 words"):
        Core(params, network=[(CfgSel.WGT, 9, 1)])
