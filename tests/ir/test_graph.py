"""IR: immutability, value equality, verifier messages, bounds, serialization round trip."""

import dataclasses

import numpy as np
import pytest

from snnc.ir import (Dense, VerifyError, input_current_bounds, required_state_bits, signed_bits,
                     state_range, verify)
from snnc.ir.serialize import graph_from_dict, graph_to_dict
from snnc.testing import random_graph
from tests.sim.test_reference import hand_graph


def test_arrays_are_frozen_and_equality_is_by_value():
    g = hand_graph()
    with pytest.raises(ValueError):
        g.projections[0].weights[0, 0] = 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.timesteps = 4
    assert g == hand_graph()
    assert g != hand_graph(T=4)
    other = g.replace(projections=(dataclasses.replace(g.projections[0], weights=np.array([[1, 2, 0], [0, -1, 2]])),
                                   g.projections[1]))
    assert g != other


def test_float_weights_rejected():
    with pytest.raises(TypeError, match="integers"):
        Dense(0, 1, np.zeros((2, 2)), 8)


@pytest.mark.parametrize("change,msg", [
    (lambda g: g.replace(timesteps=0), "timesteps"),
    (lambda g: g.replace(projections=(dataclasses.replace(g.projections[0], bits=3), g.projections[1])), "bits"),
    (lambda g: g.replace(projections=(dataclasses.replace(g.projections[0], weights=np.full((2, 3), 8)), g.projections[1])),
     r"4-bit range \[-7, 7\]"),
    (lambda g: g.replace(projections=(g.projections[0],)), "no incoming projection"),
    (lambda g: g.replace(populations=(dataclasses.replace(g.populations[0], theta=0), g.populations[1])), "theta"),
    (lambda g: g.replace(populations=(dataclasses.replace(g.populations[0], v_min=5), g.populations[1])), "v_min"),
    (lambda g: g.replace(populations=(dataclasses.replace(g.populations[0], spiking=False), g.populations[1])),
     "non-spiking"),
    (lambda g: g.replace(projections=(g.projections[0], dataclasses.replace(g.projections[1], weights=np.zeros((2, 3), np.int64)))),
     "weights shape"),
])
def test_verifier_messages(change, msg):
    with pytest.raises(VerifyError, match=msg):
        verify(change(hand_graph()))


def test_bounds_by_hand():
    g = hand_graph()
    neg, pos = input_current_bounds(g, 1)
    # h0 = x0 + 2 x1 (x in 0..255): [0, 765]; h1 = -x1 + 3 x2: [-255, 765]
    assert neg.tolist() == [0, -255] and pos.tolist() == [765, 765]
    neg, pos = input_current_bounds(g, 2)   # spikes in 0..2
    assert neg.tolist() == [-2, 0] and pos.tolist() == [2, 6]
    assert state_range(g, 1) == (-20 - 255, 20 + 765 + 1)
    assert signed_bits(-128, 127) == 8 and signed_bits(0, 128) == 9 and signed_bits(-129, 0) == 9
    assert required_state_bits(g) == 11   # [-275, 786]


def test_serialize_round_trip(seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        g = random_graph(rng, residual=True)
        desc, arrays = graph_to_dict(g)
        assert graph_from_dict(desc, arrays) == g


def test_deserialize_errors_are_verify_errors():
    desc, arrays = graph_to_dict(hand_graph())
    del desc["populations"][0]["theta"]
    with pytest.raises(VerifyError, match="malformed"):
        graph_from_dict(desc, arrays)
