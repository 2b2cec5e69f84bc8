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

    Stage ``I`` registers ``U`` and ``U - smax_theta``. Stage ``k`` (``k = 0 .. strength_bits-1``)
    decides bit ``b = strength_bits-1-k`` of ``q = min(U // theta, 2**strength_bits - 1)`` by
    restoring division: the remainder ``D = U - q_so_far * theta`` travels with the value, and
    one subtraction ``D - (theta << b)`` both decides the bit (its sign) and gives the next
    remainder. Stage 0 also clamps the two results that do not depend on ``q`` (``U`` for a
    population that does not spike, ``U - smax_theta``); the final stage clamps ``D``, applies
    ``s_max`` (``U - smax_theta`` when ``q > s_max``) and registers the result. Every register advances only when ``en`` is high (a global stall
    freezes the pipeline). The per-population inputs (``theta`` ... ``gate``) must be stable
    while values are in flight. ``tag`` travels alongside unchanged.

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
        tag_bits = len(self.i_tag)
        # Stage I: register U (it comes straight from two memory reads and an adder).
        valid, u, tag = Signal(name="valid_i"), Signal(signed(vb), name="u_i"), Signal(tag_bits, name="tag_i")
        u_over = Signal(wide, name="u_over_i")            # U - s_max * theta
        with m.If(self.en):
            m.d.sync += [valid.eq(self.i_valid), u.eq(self.i_u), tag.eq(self.i_tag),
                         u_over.eq(self.i_u - self.smax_theta)]
        def clamp(x):
            return Mux(x < self.vmin, self.vmin, Mux(x > self.vmax, self.vmax, x))

        # The two results that do not depend on q, clamped in stage 0 beside the first
        # division step: U itself (a population that does not spike) and U - s_max*theta.
        q, d = Const(0, sb), u
        for k in range(sb):
            b = sb - 1 - k
            diff = Signal(wide, name=f"diff{k}")
            m.d.comb += diff.eq(d - (self.theta << b))
            take = diff >= 0
            n_valid, n_u = Signal(name=f"valid{k}"), Signal(signed(vb), name=f"u{k}")
            n_q, n_d = Signal(sb, name=f"q{k}"), Signal(wide, name=f"d{k}")
            n_tag = Signal(tag_bits, name=f"tag{k}")
            with m.If(self.en):
                m.d.sync += [n_valid.eq(valid), n_u.eq(u), n_tag.eq(tag),
                             n_q.eq(Mux(take, q | (1 << b), q)), n_d.eq(Mux(take, diff, d))]
            if k == 0:
                v_plain, v_over = Signal(signed(vb), name="v_plain"), Signal(signed(vb), name="v_over")
                with m.If(self.en):
                    m.d.sync += [v_plain.eq(clamp(u)), v_over.eq(clamp(u_over))]
            else:
                n_plain, n_over = Signal(signed(vb), name=f"v_plain{k}"), Signal(signed(vb), name=f"v_over{k}")
                with m.If(self.en):
                    m.d.sync += [n_plain.eq(v_plain), n_over.eq(v_over)]
                v_plain, v_over = n_plain, n_over
            valid, u, q, d, tag = n_valid, n_u, n_q, n_d, n_tag
        over = q > self.smax
        s = Signal(sb)
        m.d.comb += s.eq(Mux(self.spiking, Mux(over, self.smax, q), 0))
        clamped = Mux(self.spiking, Mux(over, v_over, clamp(d)), v_plain)
        with m.If(self.en):
            m.d.sync += [self.o_valid.eq(valid), self.o_tag.eq(tag)]
            with m.If(self.gate):
                m.d.sync += [self.o_s.eq(u[:sb]), self.o_v.eq(Cat(Const(0, sb), u[sb:]))]
            with m.Else():
                m.d.sync += [self.o_s.eq(s), self.o_v.eq(clamped)]
        return m
