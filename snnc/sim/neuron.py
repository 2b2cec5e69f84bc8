"""Twin model of :class:`snnc.hw.neuron.NeuronUnit`: the phase-domain neuron update."""

from __future__ import annotations

from ..hw.params import NeuronParams

__all__ = ["NeuronModel"]


class NeuronModel:
    """Pure-Python model of the neuron unit, built from the same :class:`NeuronParams`.

    ``update(u, ...)`` returns ``(s, v)``::

        s = min(u // theta, s_max)   if spiking and u >= theta   else 0
        v = clamp(u - s * theta, v_min, v_max)

    The hardware finds ``min(u // theta, 2**strength_bits - 1)`` by a pipelined binary search
    (one stage per strength bit, each comparing ``u`` with a candidate multiple of ``theta``) and
    then applies ``s_max``; the result is the same integer.
    """

    def __init__(self, params: NeuronParams):
        if not isinstance(params, NeuronParams):
            raise TypeError(f"expected NeuronParams, not {params!r}")
        self.params = params

    def check(self, u: int, theta: int, s_max: int, v_min: int, v_max: int) -> None:
        p = self.params
        lo, hi = -(1 << (p.v_bits - 1)), (1 << (p.v_bits - 1)) - 1
        for name, val in (("u", u), ("v_min", v_min), ("v_max", v_max), ("theta", theta)):
            if not lo <= val <= hi:
                raise ValueError(f"{name}={val} does not fit {p.v_bits} signed bits")
        if theta < 1:
            raise ValueError(f"theta must be >= 1, not {theta}")
        if not 1 <= s_max <= p.max_strength:
            raise ValueError(f"s_max must be in 1..{p.max_strength}, not {s_max}")

    def update(self, u: int, theta: int, s_max: int, v_min: int, v_max: int,
               spiking: bool = True, gate: bool = False) -> tuple[int, int]:
        """``gate=True``: ``u`` is a packed max-pool gate state; emit and clear its low bits."""
        if gate:
            mask = (1 << self.params.strength_bits) - 1
            return u & mask, u & ~mask
        self.check(u, theta, s_max, v_min, v_max)
        s = min(u // theta, s_max) if spiking and u >= theta else 0
        return s, min(max(u - s * theta, v_min), v_max)
