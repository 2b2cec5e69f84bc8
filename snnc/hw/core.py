"""One neuromorphic tile: event-driven synapse walk plus a per-timestep neuron sweep.

Twin model: :class:`snnc.sim.core.CoreModel` (bit-exact results and exact cycle counts).
The timing contract is in docs/architecture.md ("The core" and "Timing").

Per timestep the core (1) accepts input events until an end-of-timestep token, walking each
source's stored nonzero synapses and adding ``w * strength`` into the target membranes; then, for
each population in order, (2) sweeps its neurons through :class:`NeuronUnit`, writing spikes to
the output stream and to the spike buffer, and (3) walks the fan-out of the buffered spikes.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .neuron import NeuronUnit
from .spram import SPRAMMemory
from .params import (MEMBER_BITS, TIMING, CfgSel, ConvField, CoreParams, Counter, ParamField,
                     SourceMode)

__all__ = ["Core", "input_layout", "output_layout", "record_bits"]


def input_layout(p: CoreParams) -> data.StructLayout:
    """Input event: ``eot`` ends the timestep; otherwise source ``index`` sends ``value``."""
    return data.StructLayout({"index": p.source_addr_bits, "value": signed(p.input_bits), "eot": 1})


def output_layout(p: CoreParams) -> data.StructLayout:
    """Output event: a spike of neuron ``index`` of population ``pop``, or an end-of-timestep."""
    return data.StructLayout({"pop": p.pop_bits, "index": p.local_bits,
                              "strength": p.strength_bits, "eot": 1})


def _param_layout(p: CoreParams) -> data.StructLayout:
    vb = p.v_bits
    return data.StructLayout({
        "NBASE": p.neuron_addr_bits, "SIZE": p.local_bits + 1,
        "SBASE": p.source_addr_bits, "TBASE": p.syn_addr_bits, "WBASE": p.syn_addr_bits,
        "WSHIFT": 2, "THETA": unsigned(vb), "SMAX": p.strength_bits, "VMIN": signed(vb),
        "VMAX": signed(vb), "SPIKING": 1, "SMAX_THETA": unsigned(vb), "SMODE": 2, "GATE": 1,
    })


def record_bits(p: CoreParams) -> int:
    """Bits of one population record (the word of ``Core(..., ram_records=True)``)."""
    return _param_layout(p).size


def _conv_layout(p: CoreParams) -> data.StructLayout:
    cb = p.coord_bits
    return data.StructLayout({"PAD_Y": 3, "PAD_X": 3, "STRIDE_Y": 3, "STRIDE_X": 3,
                              "RECIP_Y": p.recip_shift + 1, "RECIP_X": p.recip_shift + 1,
                              "OUT_H": cb + 1, "OUT_W": cb + 1})


def _global_widths(p: CoreParams) -> dict:
    """Widths of the global registers, by ``GLOBAL`` address order: the number of populations,
    the timesteps of a run and the length of the clear sweep."""
    return {"n_pops": p.pop_bits + 1, "timesteps": p.counter_bits, "n_clear": p.clear_bits + 1}


def _register_file_writes(m, write, addr, wdata, regs, layout, fields) -> None:
    """Configuration writes into a bank of records: ``addr = record * 16 + field``."""
    with m.If(write):
        with m.Switch(addr[4:]):
            for k, reg in enumerate(regs):
                with m.Case(k):
                    with m.Switch(addr[:4]):
                        for f in fields:
                            with m.Case(int(f)):
                                m.d.sync += getattr(reg, f.name).eq(wdata[:layout[f.name].width])


class Core(wiring.Component):
    """The tile, sized by a :class:`CoreParams`; networks are loaded at run time, or built in.

    Parameters
    ----------
    params : CoreParams
    spram : set of str, optional
        Memories of :attr:`SPRAM_CAPABLE` to put on iCE40 SPRAM (:mod:`snnc.hw.spram`).
    ram_records : bool
        Hold the population records in one block-RAM word each instead of registers: the
        same timing and results, about 1,500 fewer iCE40 logic cells for 8 populations, and
        ``ceil(record bits / 16)`` more EBR (:func:`record_bits`).
    network : list of (cfg_sel, cfg_addr, cfg_data), optional
        Configuration writes (:func:`snnc.hw.mapping.config_writes`) whose result the core
        holds from the start: the initial contents of ``ptr``, ``tgt``, ``wgt`` and ``bias``
        (except those on SPRAM, which cannot be initialized and must still be loaded) and the
        initial, hence reset, values of the population, convolution and global registers
        (:func:`snnc.hw.images.initial_contents`). Without it every word and register starts
        at zero, as in a core generated without this argument (the same Verilog).

    Ports
    -----
    inp : stream of :func:`input_layout`
    out : stream of :func:`output_layout`
    cfg_we, cfg_sel, cfg_addr, cfg_data
        Configuration writes (one per cycle, only while idle). ``cfg_sel`` is a :class:`CfgSel`.
    start
        Pulse while idle: clears all membranes and counters, then runs ``timesteps`` timesteps.
    busy
        High from ``start`` until the last end-of-timestep event has left ``out``.
    rb_sel, rb_addr, rb_data
        Readback while idle: ``rb_sel=0`` reads membrane ``rb_addr``, ``rb_sel=1`` reads counter
        ``rb_addr`` (a :class:`Counter`); ``rb_data`` is valid the cycle after.
    """

    #: The memories that may live on iCE40 SPRAM: loaded only while idle, read only while running.
    SPRAM_CAPABLE = ("ptr", "tgt", "wgt", "bias")

    def __init__(self, params: CoreParams, *, spram=(), ram_records=False, network=None):
        if not isinstance(params, CoreParams):
            raise TypeError(f"expected CoreParams, not {params!r}")
        spram = frozenset(spram)
        if not spram <= set(self.SPRAM_CAPABLE):
            self._MustUse__silence = True        # never built: no "created but never used"
            raise ValueError(f"only {', '.join(self.SPRAM_CAPABLE)} can live on SPRAM, not "
                             f"{', '.join(sorted(spram - set(self.SPRAM_CAPABLE)))}")
        self.spram = spram
        self.ram_records = bool(ram_records)
        self.params = p = params
        self.initial = None
        if network is not None:
            from .images import initial_contents
            try:
                self.initial = initial_contents(network, params)
            except Exception:
                self._MustUse__silence = True        # never built: no "created but never used"
                raise
        super().__init__({
            "inp": In(stream.Signature(input_layout(p))),
            "out": Out(stream.Signature(output_layout(p))),
            "cfg_we": In(1), "cfg_sel": In(3), "cfg_addr": In(p.cfg_addr_bits),
            "cfg_data": In(p.cfg_data_bits),
            "start": In(1), "busy": Out(1),
            "rb_sel": In(1), "rb_addr": In(max(p.neuron_addr_bits, 6)), "rb_data": Out(p.rb_bits),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        vb, sb = p.v_bits, p.strength_bits

        # Memories (synchronous read ports only, so they map onto block RAM; the ones named in
        # ``spram`` on iCE40 SPRAM blocks instead, with the same ports and timing). With a
        # built-in network, the block RAM ones start with its words (SPRAM has no initial
        # contents) and the registers below start, and reset, to its values.
        ini = self.initial

        def init(value):
            return {} if ini is None else {"init": value}

        def loaded(name, shape, depth):
            if name in self.spram:
                mem = SPRAMMemory(shape=shape, depth=depth, name=f"{name}_spram")
            else:
                mem = memory.Memory(shape=shape, depth=depth,
                                    init=[] if ini is None else ini.memories[name])
            m.submodules[f"{name}_mem"] = mem
            return mem

        ptr_mem = loaded("ptr", p.ptr_bits, p.max_sources)
        tgt_mem = loaded("tgt", p.tgt_bits, p.max_synapses)
        wgt_mem = loaded("wgt", 8, p.weight_depth)
        bias_mem = loaded("bias", signed(vb), p.max_neurons)
        m.submodules.v_mem = v_mem = memory.Memory(shape=signed(vb), depth=p.max_neurons, init=[])
        m.submodules.spk_mem = spk_mem = memory.Memory(
            shape=p.source_addr_bits + sb, depth=p.max_pop_size, init=[])
        ptr_w, tgt_w, wgt_w, bias_w = (mem.write_port() for mem in (ptr_mem, tgt_mem, wgt_mem, bias_mem))
        v_w = v_mem.write_port()
        spk_w = spk_mem.write_port()
        ptr_r, tgt_r, wgt_r, bias_r = (mem.read_port() for mem in (ptr_mem, tgt_mem, wgt_mem, bias_mem))
        v_r = v_mem.read_port(transparent_for=(v_w,))
        spk_r = spk_mem.read_port()
        # Input current per neuron (``input_current_depth`` > 0: the input is walked once per
        # inference, into this memory, and every sweep adds it).
        io = p.input_once
        if io:
            m.submodules.icur_mem = icur_mem = memory.Memory(
                shape=signed(vb), depth=p.input_current_depth, init=[])
            icur_w = icur_mem.write_port()
            icur_r = icur_mem.read_port(transparent_for=(icur_w,))
        # Accumulated strength of each max-pool member (indexed by global source).
        m.submodules.cnt_mem = cnt_mem = memory.Memory(shape=p.pool_count_bits, depth=p.pool_depth, init=[])
        cnt_w = cnt_mem.write_port()
        cnt_r = cnt_mem.read_port(transparent_for=(cnt_w,))

        en = Signal()       # the pipeline advances (no output stall, no wait for input)
        idle = Signal()     # the control state machine is in IDLE

        # Population records and global registers.
        playout = _param_layout(p)
        if self.ram_records:
            # One block-RAM word per population (bit-granular writes: a configuration write
            # sets one field). Non-transparent, so no bypass logic: a write is read from the
            # next cycle on, as a register would be (see "Population records" in
            # docs/architecture.md for the prefetch that keeps the timing of registers).
            m.submodules.rec_mem = rec_mem = memory.Memory(
                shape=playout.size, depth=p.max_pops,
                init=[] if ini is None else [playout.const(r).as_value().value for r in ini.pops])
            rec_w = rec_mem.write_port(granularity=1)
            rec_r = rec_mem.read_port()
            rec_wdata, rec_rdata = playout(rec_w.data), playout(rec_r.data)
        else:
            pregs = Array(Signal(playout, name=f"pop{k}", **init(ini and ini.pops[k]))
                          for k in range(p.max_pops))
        gw = _global_widths(p)
        n_pops = Signal(gw["n_pops"], **init(ini and ini.global_regs["n_pops"]))
        timesteps = Signal(gw["timesteps"], **init(ini and ini.global_regs["timesteps"]))
        n_clear = Signal(gw["n_clear"], **init(ini and ini.global_regs["n_clear"]))
        cur_pop = Signal(p.pop_bits)
        # The current population's record, registered: every use reads a flat register instead
        # of a max_pops-way multiplexer. ``set_pop(k)`` moves ``cur_pop`` and ``cur`` together.
        cur = Signal(playout, name="cur")

        # Flags the control state machine tests, computed a cycle ahead into registers so that
        # no state transition waits on an adder or a magnitude compare: the current
        # population's last neuron (SIZE - 1), whether it is the last population, whether the
        # clear sweep has more to do, whether this timestep is the last one.
        cur_size_m1 = Signal(p.local_bits + 1)
        cur_is_last = Signal()
        clear_more = Signal()
        last_t = Signal()

        # Counters. The spike counters are one memory word per population: ``pop_spikes``
        # counts the current population's spikes, starts from its word (0 in the first
        # timestep) and is written back at the end of its sweep, when no more can come.
        cnt_active = Signal(p.counter_bits)
        cnt_total = Signal(p.counter_bits)
        cnt_synops = Signal(p.counter_bits)
        cnt_t = Signal(p.counter_bits)
        m.submodules.spc_mem = spc_mem = memory.Memory(shape=p.counter_bits, depth=p.max_pops,
                                                       init=[])
        spc_w, spc_r = spc_mem.write_port(), spc_mem.read_port()
        pop_spikes = Signal(p.counter_bits)
        first_t = Signal()

        # ``set_pop(k)`` for k = 0 or cur_pop + 1. The population-indexed read ports (spike
        # counters, and the records when they are in block RAM) hold the next population's word
        # in advance: their address is ``pop_next`` (the population after ``cur_pop``, 0 after
        # the last), and 1 in EMIT_EOT (the one set_pop(0) that the next cycle can follow with
        # set_pop(1)); while idle the records' is 0 and the counters' the readback address.
        # They advance with ``en`` like every other read port, so a stall holds the word.
        pop_next = Signal(p.pop_bits)
        pf_addr = Signal(p.pop_bits)
        m.d.comb += [pf_addr.eq(pop_next), spc_r.en.eq(en | idle),
                     spc_r.addr.eq(Mux(idle, self.rb_addr - Counter.SPIKES, pf_addr))]
        if self.ram_records:
            rec_load0 = Signal()          # load cur from record 0 in the first CLEAR cycle
            m.d.comb += [rec_r.en.eq(en | idle), rec_r.addr.eq(Mux(idle, 0, pf_addr))]
            m.d.sync += cur_size_m1.eq(cur.SIZE - 1)   # first used in SWEEP, after DRAIN

        def set_pop(k):
            stmts = [cur_pop.eq(k), pop_next.eq(Mux(k + 1 == n_pops, 0, k + 1)),
                     cur_is_last.eq(k == n_pops - 1),
                     # population 0 (the input) never spikes
                     pop_spikes.eq(0 if isinstance(k, int) and k == 0 else
                                   Mux(first_t, 0, spc_r.data))]
            if self.ram_records:
                return stmts + [cur.eq(rec_rdata)]
            return stmts + [cur.eq(pregs[k]), cur_size_m1.eq(pregs[k].SIZE - 1)]
        clayout = _conv_layout(p)
        cregs = Array(Signal(clayout, name=f"conv{j}", **init(ini and ini.convs[j]))
                      for j in range(p.max_convs))

        # Global stall: output backpressure, or waiting for an input event.
        stall_out = Signal()
        wait_in = Signal()
        m.d.comb += [stall_out.eq(self.out.valid & ~self.out.ready), en.eq(~stall_out & ~wait_in)]
        for port in (ptr_r, tgt_r, wgt_r, bias_r, v_r, spk_r, cnt_r) + ((icur_r,) if io else ()):
            m.d.comb += port.en.eq(en)

        # Configuration writes (idle only; the host guarantees it).
        sel, addr, wdata = self.cfg_sel, self.cfg_addr, self.cfg_data
        we = self.cfg_we
        m.d.comb += [ptr_w.addr.eq(addr), ptr_w.data.eq(wdata), ptr_w.en.eq(we & (sel == CfgSel.PTR)),
                     tgt_w.addr.eq(addr), tgt_w.data.eq(wdata), tgt_w.en.eq(we & (sel == CfgSel.TGT)),
                     wgt_w.addr.eq(addr), wgt_w.data.eq(wdata), wgt_w.en.eq(we & (sel == CfgSel.WGT)),
                     bias_w.addr.eq(addr), bias_w.data.eq(wdata), bias_w.en.eq(we & (sel == CfgSel.BIAS))]
        if self.ram_records:
            pwrite = we & (sel == CfgSel.PARAM)
            m.d.comb += rec_w.addr.eq(addr[4:])
            for f in ParamField:
                w = playout[f.name].width
                m.d.comb += getattr(rec_wdata, f.name).eq(wdata[:w])
            m.d.comb += rec_w.en.eq(Cat(
                (pwrite & (addr[:4] == int(f))).replicate(playout[f.name].width)
                for f in sorted(ParamField, key=lambda f: playout[f.name].offset)))
        else:
            _register_file_writes(m, we & (sel == CfgSel.PARAM), addr, wdata, pregs, playout,
                                  ParamField)
        with m.If(we & (sel == CfgSel.GLOBAL)):
            with m.Switch(addr[:2]):
                with m.Case(0):
                    m.d.sync += n_pops.eq(wdata)
                with m.Case(1):
                    m.d.sync += timesteps.eq(wdata)
                with m.Case(2):
                    m.d.sync += n_clear.eq(wdata)
        _register_file_writes(m, we & (sel == CfgSel.CONV), addr, wdata, cregs, clayout, ConvField)

        # Neuron unit.
        m.submodules.neuron = nu = NeuronUnit(p.neuron, tag_bits=p.local_bits)
        m.d.comb += [nu.en.eq(en), nu.theta.eq(cur.THETA), nu.smax.eq(cur.SMAX),
                     nu.smax_theta.eq(cur.SMAX_THETA), nu.vmin.eq(cur.VMIN), nu.vmax.eq(cur.VMAX),
                     nu.spiking.eq(cur.SPIKING), nu.gate.eq(cur.GATE)]

        # Synapse pipeline (6 stages): S0 reads the entry and its weight; S1 selects the weight
        # lane and decodes the kernel tap; S2 multiplies and divides by the stride; S3 checks
        # bounds and forms the target; S4 reads V (and a max-pool member's count); S5 writes
        # V + w * strength, or the gate state.
        nab, cb, sb_ = p.neuron_addr_bits, p.coord_bits, p.strength_bits
        s0_valid = Signal()
        walk_pos = Signal(p.syn_addr_bits)   # relative entry index within the fan-out region
        walk_left = Signal(p.count_bits)
        walk_y = Signal(cb)
        walk_x = Signal(cb)
        evt_strength = Signal(signed(p.input_bits))
        evt_src = Signal(p.source_addr_bits)
        m.d.comb += [tgt_r.addr.eq(cur.TBASE + walk_pos),
                     wgt_r.addr.eq(cur.WBASE + (walk_pos >> cur.WSHIFT))]

        def stage(name, **fields):
            return {k: Signal(v, name=f"{name}_{k}") for k, v in fields.items()}

        # ``ic``: the entry adds into the input current (the input's walk in the first timestep
        # of a core that walks the input once), not into V.
        common = dict(valid=1, strength=signed(p.input_bits), mode=2, g=p.source_addr_bits, ic=1)
        to_icur = Signal()
        s1 = stage("s1", lane=2, shift=2, y=cb, x=cb, **common)
        # The convolution's geometry travels with the entry: RECIP from S1, strides and output
        # size from S2, so no stage multiplies or compares through the max_convs-way choice.
        clay = _conv_layout(p)
        s2 = stage("s2", t=nab, w=signed(8), ny=signed(cb + 2),
                   nx=signed(cb + 2), cid=p.conv_bits, member=MEMBER_BITS,
                   ry=clay["RECIP_Y"].shape, rx=clay["RECIP_X"].shape, **common)
        s3 = stage("s3", t=nab, prod=signed(8 + p.input_bits), ny=signed(cb + 2),
                   nx=signed(cb + 2), qy=cb + 1, qx=cb + 1, member=MEMBER_BITS,
                   sy=clay["STRIDE_Y"].shape, sx=clay["STRIDE_X"].shape,
                   oh=clay["OUT_H"].shape, ow=clay["OUT_W"].shape, **common)
        s4 = stage("s4", t=nab, prod=signed(8 + p.input_bits), member=MEMBER_BITS,
                   acc=p.pool_count_bits, **common)
        s5 = stage("s5", t=nab, prod=signed(8 + p.input_bits), member=MEMBER_BITS,
                   acc=p.pool_count_bits, **common)

        def carry(dst, src):
            return [dst[k].eq(src[k]) for k in common]

        with m.If(en):
            m.d.sync += [s1["valid"].eq(s0_valid), s1["lane"].eq(walk_pos & ((1 << cur.WSHIFT) - 1)),
                         s1["shift"].eq(cur.WSHIFT), s1["strength"].eq(evt_strength),
                         s1["mode"].eq(cur.SMODE), s1["g"].eq(evt_src), s1["ic"].eq(to_icur),
                         s1["y"].eq(walk_y), s1["x"].eq(walk_x)]
        # S1
        weight = Signal(signed(8))
        word = wgt_r.data
        with m.Switch(s1["shift"]):
            with m.Case(0):
                m.d.comb += weight.eq(word.as_signed())
            with m.Case(1):
                m.d.comb += weight.eq(word.word_select(s1["lane"][0], 4).as_signed())
            with m.Default():
                m.d.comb += weight.eq(word.word_select(s1["lane"], 2).as_signed())
        entry = tgt_r.data
        e_t, e_ky, e_kx, e_cid = entry[:nab], entry[nab:nab + 3], entry[nab + 3:nab + 6], entry[nab + 6:]
        cv1 = cregs[e_cid]
        with m.If(en):
            m.d.sync += carry(s2, s1) + [
                s2["t"].eq(e_t), s2["w"].eq(weight), s2["cid"].eq(e_cid),
                s2["member"].eq(Cat(e_kx, e_ky)),
                s2["ny"].eq(s1["y"] + cv1.PAD_Y - e_ky), s2["nx"].eq(s1["x"] + cv1.PAD_X - e_kx),
                s2["ry"].eq(cv1.RECIP_Y), s2["rx"].eq(cv1.RECIP_X)]
        # S2
        cv2 = cregs[s2["cid"]]
        with m.If(en):
            m.d.sync += carry(s3, s2) + [
                s3[k].eq(s2[k]) for k in ("t", "ny", "nx", "member")] + [
                s3["sy"].eq(cv2.STRIDE_Y), s3["sx"].eq(cv2.STRIDE_X),
                s3["oh"].eq(cv2.OUT_H), s3["ow"].eq(cv2.OUT_W),
                s3["prod"].eq(s2["w"] * s2["strength"]),
                s3["qy"].eq((s2["ny"][:cb + 1] * s2["ry"]) >> p.recip_shift),
                s3["qx"].eq((s2["nx"][:cb + 1] * s2["rx"]) >> p.recip_shift)]
        # S2 also reads a max-pool member's count ``cnt[g]``: a source has one pool entry and
        # the next event's entry reaches S2 at the earliest in the cycle this one's S5 writes
        # (3 cycles per event at least), which the port's transparency covers.
        m.d.comb += cnt_r.addr.eq(s2["g"])
        # S3
        conv_ok = ((s3["ny"] >= 0) & (s3["nx"] >= 0) & (s3["qy"] * s3["sy"] == s3["ny"]) &
                   (s3["qx"] * s3["sx"] == s3["nx"]) & (s3["qy"] < s3["oh"]) &
                   (s3["qx"] < s3["ow"]))
        s3_target = Signal(nab)
        with m.If(s3["mode"] == SourceMode.CONV):
            m.d.comb += s3_target.eq(s3["t"] + s3["qy"] * s3["ow"] + s3["qx"])
        with m.Else():
            m.d.comb += s3_target.eq(s3["t"])
        with m.If(en):
            m.d.sync += carry(s4, s3) + [
                s4["valid"].eq(s3["valid"] & ((s3["mode"] != SourceMode.CONV) | conv_ok)),
                s4["t"].eq(s3_target), s4["prod"].eq(s3["prod"]), s4["member"].eq(s3["member"]),
                s4["acc"].eq(cnt_r.data + s3["strength"][:sb_])]
        # S4: read V[target].
        with m.If(en):
            m.d.sync += carry(s5, s4) + [s5[k].eq(s4[k]) for k in ("t", "prod", "member", "acc")]
        # S5: membrane update, or max-pool gate update.
        pool4 = s5["mode"] == SourceMode.POOL
        acc_new = s5["acc"]
        g_idx = v_r.data[sb_:sb_ + MEMBER_BITS]
        g_acc = v_r.data[sb_ + MEMBER_BITS:sb_ + MEMBER_BITS + p.pool_count_bits]
        take = Signal()
        m.d.comb += [take.eq((acc_new > g_acc) | ((acc_new == g_acc) & (s5["member"] <= g_idx))),
                     cnt_w.addr.eq(s5["g"]), cnt_w.data.eq(acc_new),
                     cnt_w.en.eq(en & s5["valid"] & pool4)]
        s5_write = Signal()
        s5_data = Signal(signed(vb))
        s5_old = Mux(s5["ic"], icur_r.data, v_r.data) if io else v_r.data
        m.d.comb += [s5_write.eq(s5["valid"] & (~pool4 | take)),
                     s5_data.eq(Mux(pool4, Cat(s5["strength"][:sb_], s5["member"], acc_new),
                                    s5_old + s5["prod"]))]
        with m.If(en & s5["valid"] & ~pool4):
            m.d.sync += cnt_synops.eq(cnt_synops + 1)

        # Sweep pipeline: W0 issues V/bias reads, W1 feeds U = V + bias to the neuron unit.
        sweep_issue = Signal()
        sweep_i = Signal(p.local_bits + 1)
        w1_valid = Signal()
        w1_i = Signal(p.local_bits)
        with m.If(en):
            m.d.sync += [w1_valid.eq(sweep_issue), w1_i.eq(sweep_i)]
        u_in = v_r.data + bias_r.data
        if io:
            # The input current of the neurons the input feeds (0 for the others).
            w1_icur = Signal()
            with m.If(en):
                m.d.sync += w1_icur.eq(cur.NBASE + sweep_i < p.input_current_depth)
            u_in = u_in + Mux(w1_icur, icur_r.data, 0)
        m.d.comb += [nu.i_valid.eq(w1_valid), nu.i_u.eq(u_in), nu.i_tag.eq(w1_i),
                     bias_r.addr.eq(cur.NBASE + sweep_i)]

        # Spike buffer write pointer / read pointer.
        spk_wp = Signal(p.local_bits + 1)
        spk_rp = Signal(p.local_bits + 1)

        # V memory ports are shared by phase: sweep issue, synapse walk, or readback / clear.
        clear_i = Signal(p.clear_bits + 1)
        clearing = Signal()
        with m.If(sweep_issue):
            m.d.comb += v_r.addr.eq(cur.NBASE + sweep_i)
        with m.Elif(idle):
            m.d.comb += v_r.addr.eq(self.rb_addr)
        with m.Else():
            m.d.comb += v_r.addr.eq(s4["t"])
        if io:
            m.d.comb += icur_r.addr.eq(Mux(sweep_issue, cur.NBASE + sweep_i, s4["t"]))
            with m.If(s5["valid"] & s5["ic"]):
                m.d.comb += [icur_w.addr.eq(s5["t"]), icur_w.data.eq(s5_data),
                             icur_w.en.eq(en & s5_write)]
            with m.Elif(clearing):
                m.d.comb += [icur_w.addr.eq(clear_i), icur_w.data.eq(0),
                             icur_w.en.eq(clear_i < p.input_current_depth)]
        with m.If(nu.o_valid):
            m.d.comb += [v_w.addr.eq(cur.NBASE + nu.o_tag), v_w.data.eq(nu.o_v), v_w.en.eq(en)]
        with m.Elif(s5["valid"] & ~s5["ic"]):
            m.d.comb += [v_w.addr.eq(s5["t"]), v_w.data.eq(s5_data), v_w.en.eq(en & s5_write)]
        with m.Elif(clearing):
            m.d.comb += [v_w.addr.eq(clear_i), v_w.data.eq(0), v_w.en.eq(1)]
        with m.Else():
            m.d.comb += [v_w.addr.eq(addr), v_w.data.eq(wdata),
                         v_w.en.eq(we & (sel == CfgSel.VMEM))]

        # Neuron unit outputs: spike buffer, output stream, spike counters.
        spike = nu.o_valid & (nu.o_s != 0)
        spk_src = Signal(p.source_addr_bits)
        m.d.comb += [spk_src.eq(cur.SBASE + nu.o_tag),
                     spk_w.addr.eq(spk_wp), spk_w.data.eq(Cat(spk_src, nu.o_s)),
                     spk_w.en.eq(en & spike)]
        out_load = Signal()
        out_payload = Signal(output_layout(p))
        with m.If(self.out.valid & self.out.ready):
            m.d.sync += self.out.valid.eq(0)
        with m.If(en & out_load):
            m.d.sync += [self.out.valid.eq(1), self.out.payload.eq(out_payload)]
        with m.If(en & spike):
            m.d.comb += [out_load.eq(1), out_payload.pop.eq(cur_pop), out_payload.index.eq(nu.o_tag),
                         out_payload.strength.eq(nu.o_s)]
            m.d.sync += [spk_wp.eq(spk_wp + 1), pop_spikes.eq(pop_spikes + 1)]

        # Readback.
        counters = Array([cnt_active, cnt_total, cnt_synops, cnt_t])
        rb_sel_q = Signal()
        rb_spk_q = Signal()
        rb_cnt = Signal(p.counter_bits)
        m.d.sync += [rb_sel_q.eq(self.rb_sel), rb_spk_q.eq(self.rb_addr >= Counter.SPIKES),
                     rb_cnt.eq(counters[self.rb_addr[:2]])]
        m.d.comb += self.rb_data.eq(Mux(rb_sel_q, Mux(rb_spk_q, spc_r.data, rb_cnt), v_r.data))

        # Event front end (IN and SP states). The walker issues one synapse entry per cycle
        # (``walk_left`` entries left of the current event's list). The fetcher brings the next
        # event's descriptor: it starts one fetch per event the walker takes (and one when the
        # phase begins), so it is never more than one event ahead:
        #   input:  F1 takes a token and reads ptr[SBASE + index]; F2 has the descriptor.
        #   spikes: F0 reads the spike buffer; F1 reads ptr[source]; F2 has the descriptor.
        # A descriptor waits in ``nxt`` until the walker is on its last entry (or idle), which
        # then takes it, from ``nxt`` or straight from the ptr port. The phase's end (the eot
        # token, or the spike buffer found empty) flows through the same stages and ends the
        # phase when it would be taken. So event i costs max(fanout_i, 1) cycles (input) or
        # max(fanout_i, 2) (spikes), and a phase 2 (input) or 3 (spikes) more: see TIMING and
        # docs/architecture.md section 6.
        in_mode = Signal()
        sp_mode = Signal()
        phase_first = Signal()                 # the phase's first cycle: its first fetch
        a_, c_ = p.syn_addr_bits, p.count_bits
        f0_valid, f0_end = Signal(), Signal()  # spikes: the spike buffer word arrives
        f2_valid, f2_end = Signal(), Signal()  # the ptr word arrives
        f2_strength = Signal(signed(p.input_bits))
        f2_src = Signal(p.source_addr_bits)
        nxt_valid, nxt_end = Signal(), Signal()
        nxt_ptr = Signal(ptr_r.data.shape())
        nxt_strength = Signal(signed(p.input_bits))
        nxt_src = Signal(p.source_addr_bits)
        d_ptr = Mux(nxt_valid, nxt_ptr, ptr_r.data)
        d_end = Mux(nxt_valid, nxt_end, f2_end)
        have = nxt_valid | f2_valid
        # ``walk_left <= 1``, kept in a register (``en`` depends on it through ``wait_in``)
        finishing = Signal(init=1)
        take = Signal()                        # the walker takes the next event (before en)
        phase_end = Signal()                   # the phase's end reaches the walker
        fetch = Signal()                       # F1 (input) or F0 (spikes) starts this cycle
        front = in_mode | sp_mode
        m.d.comb += [take.eq(front & finishing & have & ~d_end),
                     phase_end.eq(front & finishing & have & d_end),
                     fetch.eq(front & (phase_first | take)),
                     s0_valid.eq(front & (walk_left != 0))]
        with m.If(in_mode & fetch):
            m.d.comb += [wait_in.eq(~self.inp.valid), self.inp.ready.eq(~stall_out),
                         ptr_r.addr.eq(cur.SBASE + self.inp.payload.index)]
        with m.If(sp_mode & f0_valid):
            m.d.comb += ptr_r.addr.eq(spk_r.data[:p.source_addr_bits])
        with m.If(sp_mode & fetch):
            m.d.comb += spk_r.addr.eq(spk_rp)
        with m.If(en):
            m.d.sync += [phase_first.eq(0), f0_valid.eq(sp_mode & fetch),
                         f2_valid.eq((in_mode & fetch) | (sp_mode & f0_valid))]
            with m.If(in_mode & fetch):
                m.d.sync += [f2_end.eq(self.inp.payload.eot),
                             f2_strength.eq(self.inp.payload.value),
                             f2_src.eq(cur.SBASE + self.inp.payload.index)]
            with m.If(sp_mode & fetch):
                m.d.sync += f0_end.eq(spk_rp == spk_wp)
                with m.If(spk_rp != spk_wp):
                    m.d.sync += spk_rp.eq(spk_rp + 1)
            with m.If(sp_mode & f0_valid):
                m.d.sync += [f2_end.eq(f0_end),
                             f2_strength.eq(spk_r.data[p.source_addr_bits:]),
                             f2_src.eq(spk_r.data[:p.source_addr_bits])]
            with m.If(take):
                m.d.sync += [walk_pos.eq(d_ptr[:a_]), walk_left.eq(d_ptr[a_:a_ + c_]),
                             finishing.eq(d_ptr[a_:a_ + c_] <= 1),
                             walk_y.eq(d_ptr[a_ + c_:a_ + c_ + cb]),
                             walk_x.eq(d_ptr[a_ + c_ + cb:a_ + c_ + 2 * cb]),
                             evt_strength.eq(Mux(nxt_valid, nxt_strength, f2_strength)),
                             evt_src.eq(Mux(nxt_valid, nxt_src, f2_src)),
                             nxt_valid.eq(0)]
            with m.Elif(walk_left != 0):
                m.d.sync += [walk_pos.eq(walk_pos + 1), walk_left.eq(walk_left - 1),
                             finishing.eq(walk_left <= 2)]
            with m.If(f2_valid & ~nxt_valid & ~(finishing & (take | phase_end))):
                m.d.sync += [nxt_valid.eq(1), nxt_end.eq(f2_end), nxt_ptr.eq(ptr_r.data),
                             nxt_strength.eq(f2_strength), nxt_src.eq(f2_src)]
            with m.If(phase_end):
                m.d.sync += [nxt_valid.eq(0), walk_left.eq(0), finishing.eq(1)]

        # Control state machine.
        drain_left = Signal(range(max(TIMING.drain, p.sweep_latency) + 1))
        running = Signal()
        m.d.comb += self.busy.eq(running | self.out.valid)
        with m.If(running):
            m.d.sync += cnt_total.eq(cnt_total + 1)

        def input_done():
            m.d.sync += set_pop(1) + [drain_left.eq(TIMING.drain - 1)]
            m.next = "DRAIN"

        def next_population():
            with m.If(cur_is_last):
                m.next = "EMIT_EOT"
            with m.Else():
                m.d.sync += set_pop(cur_pop + 1) + [drain_left.eq(TIMING.drain - 1)]
                m.next = "DRAIN"

        with m.FSM(init="IDLE") as fsm:
            with m.State("IDLE"):
                m.d.comb += idle.eq(1)
                with m.If(self.start):
                    m.d.sync += [clear_i.eq(0), clear_more.eq(n_clear != 0), last_t.eq(timesteps <= 1),
                                 cnt_active.eq(0), cnt_total.eq(0), cnt_synops.eq(0),
                                 cnt_t.eq(0), spk_wp.eq(0), spk_rp.eq(0),
                                 running.eq(1)] + set_pop(0)
                    m.d.sync += first_t.eq(1)
                    if self.ram_records:
                        m.d.sync += rec_load0.eq(1)
                    m.next = "CLEAR"
            with m.State("CLEAR"):
                if self.ram_records:
                    # Record 0 as it stands after every write before ``start`` (the port read
                    # it in the start cycle; a register would have been read then too).
                    with m.If(rec_load0):
                        m.d.sync += [cur.eq(rec_rdata), rec_load0.eq(0)]
                m.d.comb += clearing.eq(clear_more)
                with m.If(clear_more):
                    m.d.comb += [cnt_w.addr.eq(clear_i), cnt_w.data.eq(0), cnt_w.en.eq(1)]
                m.d.sync += [clear_i.eq(clear_i + 1), clear_more.eq(clear_i + 1 < n_clear)]
                with m.If(~clear_more):
                    m.d.sync += phase_first.eq(1)
                    m.next = "IN"
            with m.State("IN"):
                # Input events: the front end fetches, the walker walks (see above); with the
                # input walked once, into the input current (the first timestep only).
                m.d.comb += [in_mode.eq(1), to_icur.eq(first_t if io else 0)]
                with m.If(en & phase_end):
                    input_done()
            with m.State("DRAIN"):
                with m.If(en):
                    m.d.sync += [drain_left.eq(drain_left - 1), sweep_i.eq(0)]
                    with m.If(drain_left == 0):
                        m.next = "SWEEP"
            with m.State("SWEEP"):
                m.d.comb += sweep_issue.eq(1)
                with m.If(en):
                    m.d.sync += sweep_i.eq(sweep_i + 1)
                    with m.If(sweep_i == cur_size_m1):
                        m.d.sync += drain_left.eq(p.sweep_latency - 1)
                        m.next = "SWEEP_DRAIN"
            with m.State("SWEEP_DRAIN"):
                with m.If(en):
                    m.d.sync += drain_left.eq(drain_left - 1)
                    with m.If(drain_left == 0):
                        # The sweep is over: its spike count goes back to the counter memory.
                        m.d.comb += [spc_w.addr.eq(cur_pop), spc_w.data.eq(pop_spikes + spike),
                                     spc_w.en.eq(1)]
                        with m.If(cur.SPIKING):
                            m.d.sync += phase_first.eq(1)
                            m.next = "SP"
                        with m.Else():
                            next_population()
            with m.State("IN_SKIP"):
                # The input walked once: later timesteps only consume the same tokens.
                m.d.comb += [wait_in.eq(~self.inp.valid), self.inp.ready.eq(~stall_out)]
                with m.If(en & self.inp.payload.eot):
                    input_done()
            with m.State("SP"):
                # The spikes of the population just swept: fetched from the spike buffer.
                m.d.comb += sp_mode.eq(1)
                with m.If(en & phase_end):
                    m.d.sync += [spk_rp.eq(0), spk_wp.eq(0)]
                    next_population()
            with m.State("EMIT_EOT"):
                m.d.comb += pf_addr.eq(Mux(n_pops == 1, 0, 1))
                with m.If(en):
                    m.d.comb += [out_load.eq(1), out_payload.eot.eq(1), out_payload.pop.eq(cur_pop)]
                    m.d.sync += [cnt_t.eq(cnt_t + 1), last_t.eq(cnt_t + 2 >= timesteps),
                                 first_t.eq(0)] + set_pop(0)
                    with m.If(last_t):
                        m.d.sync += running.eq(0)
                        m.next = "IDLE"
                    with m.Else():
                        if io:
                            m.next = "IN_SKIP"
                        else:
                            m.d.sync += phase_first.eq(1)
                            m.next = "IN"

        with m.If(en & ~fsm.ongoing("IDLE") & ~fsm.ongoing("CLEAR")):
            m.d.sync += cnt_active.eq(cnt_active + 1)
        return m
