"""Reading a bundle's memory images back: the writes equal those mapped from the graph."""

import numpy as np
import pytest

from snnc.compiler.bundle import write_bundle
from snnc.hw.images import ImageError, config_writes_from_images, read_hex
from snnc.hw.mapping import config_writes, map_graph
from snnc.hw.params import CoreParams
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
