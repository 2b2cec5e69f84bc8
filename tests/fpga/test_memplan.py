"""Where the core's memories go: block RAM counted as yosys maps it, SPRAM on the UP5K only
when the block RAM would not hold the network."""

import pytest

from snnc.compiler.errors import SnncError
from snnc.fpga.memplan import blocks_for, plan_memories
from snnc.hw.params import CoreParams

# The demo bundles' cores (snnc demo, 4 bits): the MLP and the CNN.
MLP = CoreParams(max_neurons=74, max_sources=128, max_synapses=3899, max_pops=3, max_pop_size=64,
                 v_bits=17, strength_bits=4, input_bits=9, counter_bits=32, max_convs=1,
                 coord_bits=1, pool_count_bits=1, max_weight_words=1950, max_pool_sources=1)
CNN = CoreParams(max_neurons=1226, max_sources=1280, max_synapses=3244, max_pops=8,
                 max_pop_size=512, v_bits=16, strength_bits=4, input_bits=9, counter_bits=32,
                 max_convs=6, coord_bits=3, pool_count_bits=5, max_weight_words=1367,
                 max_pool_sources=1280)


def test_blocks_take_the_cheapest_aspect_ratio():
    assert blocks_for("iCE40UP5K", 3899, 14) == 14          # 2048 x 2: 2 deep, 7 wide
    assert blocks_for("iCE40UP5K", 74, 17) == 2             # 256 x 16: 1 deep, 2 wide
    assert blocks_for("iCE40UP5K", 1, 1) == 0               # flip-flops
    assert blocks_for("iCE40UP5K", 3, 32) == 0              # 4 words or fewer: flip-flops
    assert blocks_for("iCE40UP5K", 8, 32) == 2              # the CNN's spike counters
    assert blocks_for("LFE5U-85F", 3899, 14) == 4           # 1024 x 18


def test_the_demo_mlp_stays_in_block_ram_as_nextpnr_counts_it():
    plan = plan_memories(MLP, "iCE40UP5K", host_bytes=256)
    assert plan.spram == frozenset() and plan.blocks_used == 26      # nextpnr: 26 / 30


def test_the_demo_cnn_moves_ptr_and_tgt_to_spram():
    plan = plan_memories(CNN, "iCE40UP5K", host_bytes=256)
    assert plan.spram == {"ptr", "tgt"} and plan.spram_used == 4
    # 19 blocks for the memories, then 9 for the population records (135 bits x 8): logic
    # cells are what the UP5K runs out of (nextpnr: 29 of 30 EBR, 4,475 of 5,280 LC)
    assert plan.blocks["records"] == 9 and plan.ram_records
    assert plan.blocks_used == 30 and plan.as_dict()["spram_available"] == 4
    assert plan.as_dict()["records_in_block_ram"] is True
    ecp5 = plan_memories(CNN, "LFE5U-85F", host_bytes=256)
    assert ecp5.spram == frozenset() and not ecp5.ram_records     # LUTs are plentiful there


def test_records_go_to_block_ram_only_when_the_spare_blocks_hold_them():
    assert not plan_memories(MLP, "iCE40UP5K", host_bytes=256).ram_records     # 26 + 9 > 30


def test_what_cannot_fit_even_with_spram_is_refused_with_the_figures():
    big = CoreParams(max_neurons=8192, max_sources=4096, max_synapses=65536)
    with pytest.raises(SnncError, match=r"need \d+ ICESTORM_RAM blocks, even with .* SPRAM "
                                        r"blocks; the iCE40UP5K on icebreaker has 30 \(largest: "):
        plan_memories(big, "iCE40UP5K", board="icebreaker")
