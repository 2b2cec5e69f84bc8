"""The phase-domain neuron update unit (pipelined, one neuron per cycle).

Twin model: :class:`snnc.sim.neuron.NeuronModel`. The membrane is a phase accumulator whose
modulus is ``theta``: each wrap is one unit of spike strength, the remainder stays.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .params import NeuronParams

__all__ = ["NeuronUnit"]


class NeuronUnit(wiring.Component):
    """Computes ``(s, V')`` from ``U`` in ``params.latency`` cycles, fully pipelined.

    Stage ``k`` (``k = 0 .. strength_bits-1``) decides bit ``strength_bits-1-k`` of
    ``q = min(U // theta, 2**strength_bits - 1)`` by comparing ``U`` with ``R + (theta << b)``,
    where ``R = q_so_far * theta`` travels with the value; the final stage applies ``s_max``
    (using the precomputed ``smax_theta``), subtracts, clamps and registers the result.
    Every register advances only when ``en`` is high (a global stall freezes the pipeline).
    The per-population inputs (``theta`` ... ``gate``) must be stable while values are in
    flight. ``tag`` travels alongside unchanged.

    With ``gate`` high (a spiking max-pool population) ``U`` is a packed gate state: the unit
    emits its low ``strength_bits`` (the strength passed this timestep) and clears them.
    """

    def __init__(self, params: NeuronParams, *, tag_bits: int = 1):
        if not isinstance(params, NeuronParams):
            raise TypeError(f"expected NeuronParams, not {params!r}")
        self.params = params
        vb, sb = params.v_bits, params.strength_bits
        super().__init__({
            "en": In(1),
            "i_valid": In(1), "i_u": In(signed(vb)), "i_tag": In(tag_bits),
            "theta": In(unsigned(vb)), "smax": In(unsigned(sb)),
            "smax_theta": In(unsigned(vb + sb)),
            "vmin": In(signed(vb)), "vmax": In(signed(vb)), "spiking": In(1), "gate": In(1),
            "o_valid": Out(1), "o_s": Out(unsigned(sb)), "o_v": Out(signed(vb)), "o_tag": Out(tag_bits),
        })

    def elaborate(self, platform):
        m = Module()
        vb, sb = self.params.v_bits, self.params.strength_bits
        wide = signed(vb + sb + 2)
        valid, u, q, r, tag = self.i_valid, self.i_u, Const(0, sb), Const(0, wide), self.i_tag
        for k in range(sb):
            b = sb - 1 - k
            cand = Signal(wide, name=f"cand{k}")
            m.d.comb += cand.eq(r + (self.theta << b))
            take = cand <= u
            n_valid, n_u = Signal(name=f"valid{k}"), Signal(signed(vb), name=f"u{k}")
            n_q, n_r = Signal(sb, name=f"q{k}"), Signal(wide, name=f"r{k}")
            n_tag = Signal(len(self.i_tag), name=f"tag{k}")
            with m.If(self.en):
                m.d.sync += [n_valid.eq(valid), n_u.eq(u), n_tag.eq(tag),
                             n_q.eq(Mux(take, q | (1 << b), q)), n_r.eq(Mux(take, cand, r))]
            valid, u, q, r, tag = n_valid, n_u, n_q, n_r, n_tag
        over = q > self.smax
        s = Signal(sb)
        sub = Signal(wide)
        m.d.comb += [
            s.eq(Mux(self.spiking, Mux(over, self.smax, q), 0)),
            sub.eq(Mux(self.spiking, Mux(over, self.smax_theta, r), 0)),
        ]
        rem = Signal(wide)
        m.d.comb += rem.eq(u - sub)
        clamped = Mux(rem < self.vmin, self.vmin, Mux(rem > self.vmax, self.vmax, rem))
        with m.If(self.en):
            m.d.sync += [self.o_valid.eq(valid), self.o_tag.eq(tag)]
            with m.If(self.gate):
                m.d.sync += [self.o_s.eq(u[:sb]), self.o_v.eq(Cat(Const(0, sb), u[sb:]))]
            with m.Else():
                m.d.sync += [self.o_s.eq(s), self.o_v.eq(clamped)]
        return m
