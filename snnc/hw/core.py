"""One neuromorphic tile: event-driven synapse walk plus a per-timestep neuron sweep.

Twin model: :class:`snnc.sim.core.CoreModel` (bit-exact results and exact cycle counts).
The timing contract is in docs/architecture.md ("The core" and "Timing").

Per timestep the core (1) accepts input events until an end-of-timestep token, walking each
source's stored nonzero synapses and adding ``w * strength`` into the target membranes; then, for
each population in order, (2) sweeps its neurons through :class:`NeuronUnit`, writing spikes to
the output stream and to the spike buffer, and (3) walks the fan-out of the buffered spikes.
"""

from __future__ import annotations

import contextlib

from amaranth.hdl import C, Array, Cat, Module, Mux, Signal, signed, unsigned
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
        if spram and params.lanes > 1:
            self._MustUse__silence = True        # never built: no "created but never used"
            raise ValueError(f"a core with {params.lanes} lanes cannot put memories on SPRAM "
                             "(its target and weight memories are banked)")
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
            # Tile mode: the population whose events ``inp`` should offer (the input
            # population in IN, the population just swept while its spikes come back).
            **({"phase_pop": Out(p.pop_bits)} if p.tile else {}),
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

        L, lb = p.lanes, p.lane_bits

        def loaded(name, shape, depth, bank=None):
            words = [] if ini is None else ini.memories[name]
            if bank is not None and name == "bias":  # by neuron: row r holds r*L + j in
                rows = p.bank_depth(depth)            # bank neuron_bank(r*L + j)
                idx = [r * L + (bank - p.bank_rotation(r)) % L for r in range(rows)]
                words = [words[i] if i < len(words) else 0 for i in idx] if words else []
                depth, name = rows, f"{name}{bank}"
            elif bank is not None:          # by entry: words bank, bank + L, ...
                words, depth, name = words[bank::L], p.bank_depth(depth), f"{name}{bank}"
            if name in self.spram:
                mem = SPRAMMemory(shape=shape, depth=depth, name=f"{name}_spram")
            else:
                mem = memory.Memory(shape=shape, depth=depth, init=words)
            m.submodules[f"{name}_mem"] = mem
            return mem

        def banked(name, shape, depth):
            """The ``lanes`` banks of a memory (the memory itself at one lane)."""
            return [loaded(name, shape, depth)] if L == 1 else \
                [loaded(name, shape, depth, b) for b in range(L)]

        def membrane_banks(name, depth):
            mems = []
            for b in range(L):
                nm = f"{name}_mem" if L == 1 else f"{name}{b}_mem"
                m.submodules[nm] = mem = memory.Memory(shape=signed(vb), depth=p.bank_depth(depth),
                                                       init=[])
                mems.append(mem)
            return mems

        ptr_mem = loaded("ptr", p.ptr_bits, p.max_sources)
        tgt_mems = banked("tgt", p.tgt_bits, p.max_synapses)
        wgt_mems = banked("wgt", 8, p.weight_depth)
        bias_mems = banked("bias", signed(vb), p.max_neurons)
        v_mems = membrane_banks("v", p.max_neurons)
        m.submodules.spk_mem = spk_mem = memory.Memory(
            shape=p.source_addr_bits + sb, depth=p.max_pop_size, init=[])
        ptr_w = ptr_mem.write_port()
        tgt_ws = [mem.write_port() for mem in tgt_mems]
        wgt_ws = [mem.write_port() for mem in wgt_mems]
        if L == 1:
            bias_w = bias_mems[0].write_port()
            bias_ws = [bias_w]
        else:
            bias_ws = [mem.write_port() for mem in bias_mems]
        v_ws = [mem.write_port() for mem in v_mems]
        spk_w = spk_mem.write_port()
        ptr_r = ptr_mem.read_port()
        tgt_rs = [mem.read_port() for mem in tgt_mems]
        wgt_rs = [mem.read_port() for mem in wgt_mems]
        if L == 1:
            bias_r = bias_mems[0].read_port()
            bias_rs = [bias_r]
        else:
            bias_rs = [mem.read_port() for mem in bias_mems]
        v_rs = [mem.read_port(transparent_for=(w,)) for mem, w in zip(v_mems, v_ws)]
        spk_r = spk_mem.read_port()
        # Input current per neuron (``input_current_depth`` > 0: the input is walked once per
        # inference, into this memory, and every sweep adds it); banked like V.
        io = p.input_once
        if io:
            icur_mems = membrane_banks("icur", p.input_current_depth)
            icur_ws = [mem.write_port() for mem in icur_mems]
            icur_rs = [mem.read_port(transparent_for=(w,)) for mem, w in zip(icur_mems, icur_ws)]

        def nbank(n):
            """Membrane bank of neuron address ``n`` (:meth:`CoreParams.neuron_bank`)."""
            if p.bank_skew:
                return (n[:lb] + (n >> p.bank_skew)[:lb])[:lb]
            return n[:lb]

        def bank_of(addr):
            """(bank, row) of a neuron address."""
            return (nbank(addr) if L > 1 else 0), (addr >> lb if L > 1 else addr)

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

        # Global stall: output backpressure, or waiting for an input event. With lanes, a
        # membrane-bank conflict in S4 also holds S0..S4, the front end and the phase control
        # (``en_up``); S5, the sweep and the output go on with ``en``.
        stall_out = Signal()
        wait_in = Signal()
        m.d.comb += [stall_out.eq(self.out.valid & ~self.out.ready), en.eq(~stall_out & ~wait_in)]
        # The sweep of a core with lanes emits one spike per cycle: a group of neurons with
        # more spikes holds the sweep (``hold_sw``; ``en_sw = en & ~hold_sw``).
        if L == 1:
            hold, en_up, hold_sw, en_sw = 0, en, 0, en
        else:
            hold, en_up, hold_sw, en_sw = Signal(), Signal(), Signal(), Signal()
            m.d.comb += [en_up.eq(en & ~hold), en_sw.eq(en & ~hold_sw)]
        # The walk's ports hold with ``en_up``; the membrane, input-current and bias ports
        # (S4 and the sweep) advance with ``en_sw``.
        by_stage = {id(port) for port in bias_rs + v_rs + (icur_rs if io else [])}
        for port in [ptr_r] + tgt_rs + wgt_rs + bias_rs + v_rs + [spk_r, cnt_r] + (icur_rs if io else []):
            m.d.comb += port.en.eq(en_sw if id(port) in by_stage else en_up)

        # Configuration writes (idle only; the host guarantees it). A banked memory's bank is
        # the address's low ``lane_bits`` bits.
        sel, addr, wdata = self.cfg_sel, self.cfg_addr, self.cfg_data
        we = self.cfg_we

        def bank_writes(ports, which, bank=lambda a: a[:lb]):
            if L == 1:
                (w,) = ports
                return [w.addr.eq(addr), w.data.eq(wdata), w.en.eq(we & (sel == which))]
            return [st for b, w in enumerate(ports) for st in (
                w.addr.eq(addr >> lb), w.data.eq(wdata),
                w.en.eq(we & (sel == which) & (bank(addr) == b)))]
        m.d.comb += [ptr_w.addr.eq(addr), ptr_w.data.eq(wdata), ptr_w.en.eq(we & (sel == CfgSel.PTR)),
                     *bank_writes(tgt_ws, CfgSel.TGT), *bank_writes(wgt_ws, CfgSel.WGT),
                     *bank_writes(bias_ws, CfgSel.BIAS, nbank)]
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

        # Neuron unit (one per lane: the sweep takes ``lanes`` neurons per cycle).
        nus = []
        for j in range(L):
            nu = NeuronUnit(p.neuron, tag_bits=p.local_bits)
            m.submodules["neuron" if L == 1 else f"neuron{j}"] = nu
            m.d.comb += [nu.en.eq(en_sw), nu.theta.eq(cur.THETA), nu.smax.eq(cur.SMAX),
                         nu.smax_theta.eq(cur.SMAX_THETA), nu.vmin.eq(cur.VMIN),
                         nu.vmax.eq(cur.VMAX), nu.spiking.eq(cur.SPIKING), nu.gate.eq(cur.GATE)]
            nus.append(nu)

        # Synapse pipeline (6 stages): S0 reads the entry and its weight; S1 selects the weight
        # lane and decodes the kernel tap; S2 multiplies and divides by the stride; S3 checks
        # bounds and forms the target; S4 reads V (and a max-pool member's count); S5 writes
        # V + w * strength, or the gate state. With ``lanes`` > 1 every stage holds one entry
        # per lane (the event's fields once); S4 issues the lanes whose targets are in distinct
        # membrane banks and holds the rest for the next cycles (``hold``, see
        # docs/architecture.md, "Synapse lanes").
        nab, cb, sb_ = p.neuron_addr_bits, p.coord_bits, p.strength_bits
        s0_valid = Signal()
        walk_pos = Signal(p.syn_addr_bits)   # relative entry index within the fan-out region
        walk_left = Signal(p.count_bits)
        walk_y = Signal(cb)
        walk_x = Signal(cb)
        evt_strength = Signal(signed(p.input_bits))
        evt_src = Signal(p.source_addr_bits)
        if L == 1:
            lane_valid, lane_row = [s0_valid], [walk_pos]
            m.d.comb += [tgt_rs[0].addr.eq(cur.TBASE + walk_pos),
                         wgt_rs[0].addr.eq(cur.WBASE + (walk_pos >> cur.WSHIFT))]
        else:
            # Lane b reads the entry of bank b among walk_pos .. walk_pos + L - 1 (the region
            # starts on a multiple of L): row (walk_pos >> lane_bits) + (b < walk_pos % L).
            lane_valid, lane_row = [], []
            lo = walk_pos[:lb]
            for b in range(L):
                row, off, v = Signal(p.syn_addr_bits, name=f"walk_row{b}"), \
                    Signal(lb, name=f"walk_off{b}"), Signal(name=f"s0_valid{b}")
                m.d.comb += [row.eq((walk_pos >> lb) + (lo > b)), off.eq(b - lo),
                             v.eq(s0_valid & (off < walk_left)),
                             tgt_rs[b].addr.eq((cur.TBASE >> lb) + row),
                             wgt_rs[b].addr.eq(cur.WBASE + (row >> cur.WSHIFT))]
                lane_valid.append(v)
                lane_row.append(row)

        def stage(name, **fields):
            return {k: Signal(v, name=f"{name}_{k}") for k, v in fields.items()}

        def lane_stage(name, **fields):
            return [{k: Signal(v, name=f"{name}_{k}" if L == 1 else f"{name}_{k}{b}")
                     for k, v in fields.items()} for b in range(L)]

        # ``ic``: the entry adds into the input current (the input's walk in the first timestep
        # of a core that walks the input once), not into V.
        common = dict(strength=signed(p.input_bits), mode=2, g=p.source_addr_bits, ic=1)
        to_icur = Signal()
        s1 = stage("s1", shift=2, y=cb, x=cb, **common)
        s1l = lane_stage("s1", valid=1, lane=2)
        # The convolution's geometry travels with the entry: RECIP from S1, strides and output
        # size from S2, so no stage multiplies or compares through the max_convs-way choice.
        clay = _conv_layout(p)
        s2 = stage("s2", **common)
        s2l = lane_stage("s2", valid=1, t=nab, w=signed(8), ny=signed(cb + 2), nx=signed(cb + 2),
                         cid=p.conv_bits, member=MEMBER_BITS, ry=clay["RECIP_Y"].shape,
                         rx=clay["RECIP_X"].shape)
        s3 = stage("s3", **common)
        s3l = lane_stage("s3", valid=1, t=nab, prod=signed(8 + p.input_bits), ny=signed(cb + 2),
                         nx=signed(cb + 2), qy=cb + 1, qx=cb + 1, member=MEMBER_BITS,
                         sy=clay["STRIDE_Y"].shape, sx=clay["STRIDE_X"].shape,
                         oh=clay["OUT_H"].shape, ow=clay["OUT_W"].shape)
        s4 = stage("s4", acc=p.pool_count_bits, **common)
        s4l = lane_stage("s4", valid=1, t=nab, prod=signed(8 + p.input_bits), member=MEMBER_BITS)
        s5 = stage("s5", acc=p.pool_count_bits, **common)
        s5l = lane_stage("s5", valid=1, t=nab, prod=signed(8 + p.input_bits), member=MEMBER_BITS)

        def carry(dst, src):
            return [dst[k].eq(src[k]) for k in common]

        with m.If(en_up):
            m.d.sync += [s1["shift"].eq(cur.WSHIFT), s1["strength"].eq(evt_strength),
                         s1["mode"].eq(cur.SMODE), s1["g"].eq(evt_src), s1["ic"].eq(to_icur),
                         s1["y"].eq(walk_y), s1["x"].eq(walk_x)]
            for l1, v, row in zip(s1l, lane_valid, lane_row):
                m.d.sync += [l1["valid"].eq(v), l1["lane"].eq(row & ((1 << cur.WSHIFT) - 1))]
        # S1
        with m.If(en_up):
            m.d.sync += carry(s2, s1)
        for b, (l1, l2) in enumerate(zip(s1l, s2l)):
            weight = Signal(signed(8), name="weight" if L == 1 else f"weight{b}")
            word = wgt_rs[b].data
            with m.Switch(s1["shift"]):
                with m.Case(0):
                    m.d.comb += weight.eq(word.as_signed())
                with m.Case(1):
                    m.d.comb += weight.eq(word.word_select(l1["lane"][0], 4).as_signed())
                with m.Default():
                    m.d.comb += weight.eq(word.word_select(l1["lane"], 2).as_signed())
            entry = tgt_rs[b].data
            e_t, e_ky, e_kx, e_cid = entry[:nab], entry[nab:nab + 3], entry[nab + 3:nab + 6], entry[nab + 6:]
            cv1 = cregs[e_cid]
            with m.If(en_up):
                m.d.sync += [
                    l2["valid"].eq(l1["valid"]), l2["t"].eq(e_t), l2["w"].eq(weight),
                    l2["cid"].eq(e_cid), l2["member"].eq(Cat(e_kx, e_ky)),
                    l2["ny"].eq(s1["y"] + cv1.PAD_Y - e_ky), l2["nx"].eq(s1["x"] + cv1.PAD_X - e_kx),
                    l2["ry"].eq(cv1.RECIP_Y), l2["rx"].eq(cv1.RECIP_X)]
        # S2
        with m.If(en_up):
            m.d.sync += carry(s3, s2)
        for l2, l3 in zip(s2l, s3l):
            cv2 = cregs[l2["cid"]]
            with m.If(en_up):
                m.d.sync += [l3[k].eq(l2[k]) for k in ("valid", "t", "ny", "nx", "member")] + [
                    l3["sy"].eq(cv2.STRIDE_Y), l3["sx"].eq(cv2.STRIDE_X),
                    l3["oh"].eq(cv2.OUT_H), l3["ow"].eq(cv2.OUT_W),
                    l3["prod"].eq(l2["w"] * s2["strength"]),
                    l3["qy"].eq((l2["ny"][:cb + 1] * l2["ry"]) >> p.recip_shift),
                    l3["qx"].eq((l2["nx"][:cb + 1] * l2["rx"]) >> p.recip_shift)]
        # S2 also reads a max-pool member's count ``cnt[g]``: a source has one pool entry and
        # the next event's entry reaches S2 at the earliest in the cycle this one's S5 writes
        # (3 cycles per event at least), which the port's transparency covers.
        m.d.comb += cnt_r.addr.eq(s2["g"])
        # S3
        with m.If(en_up):
            m.d.sync += carry(s4, s3) + [s4["acc"].eq(cnt_r.data + s3["strength"][:sb_])]
        for b, (l3, l4) in enumerate(zip(s3l, s4l)):
            conv_ok = ((l3["ny"] >= 0) & (l3["nx"] >= 0) & (l3["qy"] * l3["sy"] == l3["ny"]) &
                       (l3["qx"] * l3["sx"] == l3["nx"]) & (l3["qy"] < l3["oh"]) &
                       (l3["qx"] < l3["ow"]))
            s3_target = Signal(nab, name="s3_target" if L == 1 else f"s3_target{b}")
            with m.If(s3["mode"] == SourceMode.CONV):
                m.d.comb += s3_target.eq(l3["t"] + l3["qy"] * l3["ow"] + l3["qx"])
            with m.Else():
                m.d.comb += s3_target.eq(l3["t"])
            with m.If(en_up):
                m.d.sync += [
                    l4["valid"].eq(l3["valid"] & ((s3["mode"] != SourceMode.CONV) | conv_ok)),
                    l4["t"].eq(s3_target), l4["prod"].eq(l3["prod"]), l4["member"].eq(l3["member"])]
        # S4: read V[target] (each bank for one lane). With lanes, the lanes not yet issued
        # (``s4_done``) that are first in their bank issue; the others wait (``hold``).
        if L == 1:
            issue = [s4l[0]["valid"]]
            s4_row = [s4l[0]["t"]]
        else:
            s4_done = Signal(L)
            rem = [l4["valid"] & ~s4_done[b] for b, l4 in enumerate(s4l)]
            bank4 = [nbank(l4["t"]) for l4 in s4l]
            issue = [Signal(name=f"s4_issue{b}") for b in range(L)]
            for b in range(L):
                first = rem[b]
                for j in range(b):
                    first = first & ~(rem[j] & (bank4[j] == bank4[b]))
                m.d.comb += issue[b].eq(first)
            m.d.comb += hold.eq(Cat(r & ~i for r, i in zip(rem, issue)).any())
            with m.If(en):
                m.d.sync += s4_done.eq(Mux(hold, s4_done | Cat(issue), 0))
            s4_row = [Signal(max(1, nab - lb), name=f"s4_row{k}") for k in range(L)]
            for k in range(L):
                for b in range(L):
                    with m.If(issue[b] & (bank4[b] == k)):
                        m.d.comb += s4_row[k].eq(s4l[b]["t"] >> lb)
        with m.If(en):
            m.d.sync += carry(s5, s4) + [s5["acc"].eq(s4["acc"])]
            for l4, l5, iss in zip(s4l, s5l, issue):
                m.d.sync += [l5["valid"].eq(iss)] + [l5[k].eq(l4[k]) for k in ("t", "prod", "member")]
        # S5: membrane update, or max-pool gate update.
        pool4 = s5["mode"] == SourceMode.POOL
        acc_new = s5["acc"]

        def bank_data(ports, t):
            """What the bank of neuron ``t`` read (the address was issued a cycle before)."""
            return ports[0].data if L == 1 else Array(r.data for r in ports)[nbank(t)]
        s5_write, s5_data = [], []
        for b, l5 in enumerate(s5l):
            vd = bank_data(v_rs, l5["t"])
            g_idx = vd[sb_:sb_ + MEMBER_BITS]
            g_acc = vd[sb_ + MEMBER_BITS:sb_ + MEMBER_BITS + p.pool_count_bits]
            take = Signal(name="take" if L == 1 else f"take{b}")
            m.d.comb += take.eq((acc_new > g_acc) | ((acc_new == g_acc) & (l5["member"] <= g_idx)))
            wr = Signal(name="s5_write" if L == 1 else f"s5_write{b}")
            data_ = Signal(signed(vb), name="s5_data" if L == 1 else f"s5_data{b}")
            old = Mux(s5["ic"], bank_data(icur_rs, l5["t"]), vd) if io else vd
            m.d.comb += [wr.eq(l5["valid"] & (~pool4 | take)),
                         data_.eq(Mux(pool4, Cat(s5["strength"][:sb_], l5["member"], acc_new),
                                      old + l5["prod"]))]
            s5_write.append(wr)
            s5_data.append(data_)
        s5_any = s5l[0]["valid"] if L == 1 else Cat(l5["valid"] for l5 in s5l).any()
        m.d.comb += [cnt_w.addr.eq(s5["g"]), cnt_w.data.eq(acc_new),
                     cnt_w.en.eq(en & s5_any & pool4)]
        if L == 1:
            with m.If(en & s5_any & ~pool4):
                m.d.sync += cnt_synops.eq(cnt_synops + 1)
        else:
            with m.If(en & ~pool4):
                m.d.sync += cnt_synops.eq(cnt_synops + sum(l5["valid"] for l5 in s5l))

        # Sweep pipeline: W0 issues V/bias reads, W1 feeds U = V + bias to the neuron unit.
        # With lanes, W0 reads the group of ``lanes`` neurons NBASE + sweep_i + j, one from each
        # bank (as the walker reads entries), and W1 feeds neuron j of the group to unit j.
        sweep_issue = Signal()
        sweep_i = Signal(p.local_bits + 1)
        if L == 1:
            w1_valid = Signal()
            w1_i = Signal(p.local_bits)
            with m.If(en):
                m.d.sync += [w1_valid.eq(sweep_issue), w1_i.eq(sweep_i)]
            v_sw, icur_sw = v_rs[0].data, (icur_rs[0].data if io else None)
            u_in = v_sw + bias_rs[0].data
            if io:
                # The input current of the neurons the input feeds (0 for the others).
                w1_icur = Signal()
                with m.If(en):
                    m.d.sync += w1_icur.eq(cur.NBASE + sweep_i < p.input_current_depth)
                u_in = u_in + Mux(w1_icur, icur_sw, 0)
            m.d.comb += [nu.i_valid.eq(w1_valid), nu.i_u.eq(u_in), nu.i_tag.eq(w1_i),
                         bias_rs[0].addr.eq(cur.NBASE + sweep_i)]
            sweep_rows = [cur.NBASE + sweep_i]
        else:
            # The readback's bank (read a cycle ago).
            v_bank_q = Signal(lb)
            m.d.sync += v_bank_q.eq(nbank(self.rb_addr))
            v_sw = Array(r.data for r in v_rs)[v_bank_q]
            # The sweep goes row by row (a row: the ``lanes`` neurons row*L .. row*L + L - 1,
            # one in each bank), from the row of NBASE to the row of its last neuron; lane j
            # takes neuron row*L + j when it is the population's.
            sw_row = Signal(p.neuron_addr_bits)
            last_row = (cur.NBASE + cur_size_m1) >> lb
            sweep_rows = [sw_row] * L
            for k in range(L):
                m.d.comb += bias_rs[k].addr.eq(sw_row)
            w1_row = Signal(p.neuron_addr_bits)
            with m.If(en_sw):
                m.d.sync += w1_row.eq(sw_row)
            rot = ((w1_row >> (p.bank_skew - lb))[:lb] if p.bank_skew else 0)
            for j, nu in enumerate(nus):
                w1_valid = Signal(name=f"w1_valid{j}")
                w1_i = Signal(p.local_bits + 1, name=f"w1_i{j}")
                n_j = Cat(C(j, lb), sw_row)
                with m.If(en_sw):
                    m.d.sync += [w1_valid.eq(sweep_issue & (n_j >= cur.NBASE) &
                                             (n_j <= cur.NBASE + cur_size_m1)),
                                 w1_i.eq(n_j - cur.NBASE)]
                bank = (rot + j)[:lb] if p.bank_skew else j  # neuron row*L + j is in this bank
                u_in = Array(r.data for r in v_rs)[bank] + Array(r.data for r in bias_rs)[bank]
                if io:
                    w1_icur = Signal(name=f"w1_icur{j}")
                    with m.If(en_sw):
                        m.d.sync += w1_icur.eq(n_j < p.input_current_depth)
                    u_in = u_in + Mux(w1_icur, Array(r.data for r in icur_rs)[bank], 0)
                m.d.comb += [nu.i_valid.eq(w1_valid), nu.i_u.eq(u_in), nu.i_tag.eq(w1_i)]

        # Spike buffer write pointer / read pointer.
        spk_wp = Signal(p.local_bits + 1)
        spk_rp = Signal(p.local_bits + 1)

        # V memory ports are shared by phase: sweep issue, synapse walk, or readback / clear.
        clear_i = Signal(p.clear_bits + 1)
        clearing = Signal()
        def in_bank(cond, bank, k):
            return cond if L == 1 else cond & (bank == k)

        def lane_hit(l5, bank, k):
            """The lane of S5 that writes bank ``k`` (at most one; every lane at one lane)."""
            return contextlib.nullcontext() if L == 1 else m.If(l5["valid"] & (bank == k))
        for k in range(L):
            with m.If(sweep_issue):
                m.d.comb += v_rs[k].addr.eq(sweep_rows[k])
            with m.Elif(idle):
                m.d.comb += v_rs[k].addr.eq(bank_of(self.rb_addr)[1])
            with m.Else():
                m.d.comb += v_rs[k].addr.eq(s4_row[k])
        if io:
            for k in range(L):
                m.d.comb += icur_rs[k].addr.eq(Mux(sweep_issue, sweep_rows[k], s4_row[k]))
                bank_c, row_c = bank_of(clear_i)
                with m.If(s5_any & s5["ic"]):
                    for b, l5 in enumerate(s5l):
                        bank_t, row_t = bank_of(l5["t"])
                        with lane_hit(l5, bank_t, k):
                            m.d.comb += [icur_ws[k].addr.eq(row_t), icur_ws[k].data.eq(s5_data[b]),
                                         icur_ws[k].en.eq(en & s5_write[b])]
                with m.Elif(clearing):
                    m.d.comb += [icur_ws[k].addr.eq(row_c), icur_ws[k].data.eq(0),
                                 icur_ws[k].en.eq(in_bank(clear_i < p.input_current_depth,
                                                          bank_c, k))]
        nu_any = nu.o_valid if L == 1 else Cat(u.o_valid for u in nus).any()
        for k in range(L):
            v_w = v_ws[k]
            bank_c, row_c = bank_of(clear_i)
            bank_a, row_a = bank_of(addr)
            with m.If(nu_any):
                # The units' outputs (the same values again while the sweep holds).
                for u in nus:
                    bank_o, row_o = bank_of(cur.NBASE + u.o_tag)
                    with (contextlib.nullcontext() if L == 1 else m.If(u.o_valid & (bank_o == k))):
                        m.d.comb += [v_w.addr.eq(row_o), v_w.data.eq(u.o_v), v_w.en.eq(en)]
            with m.Elif(s5_any & ~s5["ic"]):
                for b, l5 in enumerate(s5l):
                    bank_t, row_t = bank_of(l5["t"])
                    with lane_hit(l5, bank_t, k):
                        m.d.comb += [v_w.addr.eq(row_t), v_w.data.eq(s5_data[b]),
                                     v_w.en.eq(en & s5_write[b])]
            with m.Elif(clearing):
                m.d.comb += [v_w.addr.eq(row_c), v_w.data.eq(0), v_w.en.eq(in_bank(1, bank_c, k))]
            with m.Else():
                m.d.comb += [v_w.addr.eq(row_a), v_w.data.eq(wdata),
                             v_w.en.eq(in_bank(we & (sel == CfgSel.VMEM), bank_a, k))]

        # Neuron unit outputs: spike buffer, output stream, spike counters. With lanes, the
        # group's spikes leave one per cycle in neuron order (``sw_done``: those already out);
        # the sweep holds while more than one is left.
        if L == 1:
            spike, o_tag, o_s = nu.o_valid & (nu.o_s != 0), nu.o_tag, nu.o_s
        else:
            sw_done = Signal(L)
            left = [(u.o_valid & (u.o_s != 0)) & ~sw_done[j] for j, u in enumerate(nus)]
            first = [left[j] & ~Cat(left[:j]).any() if j else left[0] for j in range(L)]
            spike, o_tag, o_s = Signal(), Signal(p.local_bits), Signal(sb)
            m.d.comb += [spike.eq(Cat(left).any()),
                         hold_sw.eq(Cat(lf & ~fs for lf, fs in zip(left, first)).any())]
            for j, u in enumerate(nus):
                with m.If(first[j]):
                    m.d.comb += [o_tag.eq(u.o_tag), o_s.eq(u.o_s)]
            with m.If(en):
                m.d.sync += sw_done.eq(Mux(hold_sw, sw_done | Cat(first), 0))
        spk_src = Signal(p.source_addr_bits)
        m.d.comb += [spk_src.eq(cur.SBASE + o_tag),
                     spk_w.addr.eq(spk_wp), spk_w.data.eq(Cat(spk_src, o_s)),
                     spk_w.en.eq(en & spike)]
        out_load = Signal()
        out_payload = Signal(output_layout(p))
        with m.If(self.out.valid & self.out.ready):
            m.d.sync += self.out.valid.eq(0)
        with m.If(en & out_load):
            m.d.sync += [self.out.valid.eq(1), self.out.payload.eq(out_payload)]
        with m.If(en & spike):
            m.d.comb += [out_load.eq(1), out_payload.pop.eq(cur_pop), out_payload.index.eq(o_tag),
                         out_payload.strength.eq(o_s)]
            m.d.sync += [spk_wp.eq(spk_wp + 1), pop_spikes.eq(pop_spikes + 1)]

        # Readback.
        counters = Array([cnt_active, cnt_total, cnt_synops, cnt_t])
        rb_sel_q = Signal()
        rb_spk_q = Signal()
        rb_cnt = Signal(p.counter_bits)
        m.d.sync += [rb_sel_q.eq(self.rb_sel), rb_spk_q.eq(self.rb_addr >= Counter.SPIKES),
                     rb_cnt.eq(counters[self.rb_addr[:2]])]
        m.d.comb += self.rb_data.eq(Mux(rb_sel_q, Mux(rb_spk_q, spc_r.data, rb_cnt), v_sw))

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
                     fetch.eq(front & (phase_first | take) & (1 if L == 1 else ~hold)),
                     s0_valid.eq(front & (walk_left != 0))]
        with m.If(in_mode & fetch):
            m.d.comb += [wait_in.eq(~self.inp.valid), self.inp.ready.eq(~stall_out),
                         ptr_r.addr.eq(cur.SBASE + self.inp.payload.index)]
        with m.If(sp_mode & f0_valid):
            m.d.comb += ptr_r.addr.eq(spk_r.data[:p.source_addr_bits])
        with m.If(sp_mode & fetch):
            m.d.comb += spk_r.addr.eq(spk_rp)
        with m.If(en_up):
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
                             finishing.eq(d_ptr[a_:a_ + c_] <= L),
                             walk_y.eq(d_ptr[a_ + c_:a_ + c_ + cb]),
                             walk_x.eq(d_ptr[a_ + c_ + cb:a_ + c_ + 2 * cb]),
                             evt_strength.eq(Mux(nxt_valid, nxt_strength, f2_strength)),
                             evt_src.eq(Mux(nxt_valid, nxt_src, f2_src)),
                             nxt_valid.eq(0)]
            with m.Elif(walk_left != 0):
                if L == 1:
                    m.d.sync += [walk_pos.eq(walk_pos + 1), walk_left.eq(walk_left - 1),
                                 finishing.eq(walk_left <= 2)]
                else:
                    m.d.sync += [walk_pos.eq(walk_pos + L),
                                 walk_left.eq(Mux(walk_left > L, walk_left - L, 0)),
                                 finishing.eq(walk_left <= 2 * L)]
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
                with m.If(en_up & phase_end):
                    input_done()
            with m.State("DRAIN"):
                with m.If(en_up):
                    m.d.sync += [drain_left.eq(drain_left - 1), sweep_i.eq(0)]
                    if L > 1:
                        m.d.sync += sw_row.eq(cur.NBASE >> lb)
                    with m.If(drain_left == 0):
                        if p.tile:
                            # No part of this population on this tile: nothing to sweep.
                            with m.If(cur.SIZE == 0):
                                m.d.sync += drain_left.eq(p.sweep_latency - 1)
                                m.next = "SWEEP_DRAIN"
                            with m.Else():
                                m.next = "SWEEP"
                        else:
                            m.next = "SWEEP"
            with m.State("SWEEP"):
                m.d.comb += sweep_issue.eq(1)
                with m.If(en_sw):
                    if L == 1:
                        m.d.sync += sweep_i.eq(sweep_i + 1)
                        done = sweep_i == cur_size_m1
                    else:
                        m.d.sync += sw_row.eq(sw_row + 1)
                        done = sw_row == last_row
                    with m.If(done):
                        m.d.sync += drain_left.eq(p.sweep_latency - 1)
                        m.next = "SWEEP_DRAIN"
            with m.State("SWEEP_DRAIN"):
                with m.If(en_sw):
                    m.d.sync += drain_left.eq(drain_left - 1)
                    with m.If(drain_left == 0):
                        # The sweep is over: its spike count goes back to the counter memory.
                        m.d.comb += [spc_w.addr.eq(cur_pop), spc_w.data.eq(pop_spikes + spike),
                                     spc_w.en.eq(1)]
                        with m.If(cur.SPIKING):
                            if p.tile:
                                m.next = "EOL"
                            else:
                                m.d.sync += phase_first.eq(1)
                                m.next = "SP"
                        with m.Else():
                            next_population()
            with m.State("IN_SKIP"):
                # The input walked once: later timesteps only consume the same tokens.
                m.d.comb += [wait_in.eq(~self.inp.valid), self.inp.ready.eq(~stall_out)]
                with m.If(en & self.inp.payload.eot):
                    input_done()
            if p.tile:
                with m.State("EOL"):
                    # Tile mode: this tile's part of the population is swept (end of layer).
                    with m.If(en):
                        m.d.comb += [out_load.eq(1), out_payload.eot.eq(1),
                                     out_payload.pop.eq(cur_pop)]
                        m.d.sync += phase_first.eq(1)
                        m.next = "SP"
            with m.State("SP"):
                # The spikes of the population just swept: fetched from the spike buffer, or,
                # in tile mode, taken from ``inp`` like input events (the mesh brings back the
                # whole population's spikes, then one ``eot`` once every tile's EOL is in).
                m.d.comb += (in_mode if p.tile else sp_mode).eq(1)
                with m.If(en_up & phase_end):
                    m.d.sync += [spk_rp.eq(0), spk_wp.eq(0)]
                    next_population()
            with m.State("EMIT_EOT"):
                m.d.comb += pf_addr.eq(Mux(n_pops == 1, 0, 1))
                with m.If(en):
                    m.d.comb += [out_load.eq(1), out_payload.eot.eq(1),
                                 out_payload.pop.eq(0 if p.tile else cur_pop)]
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

        if p.tile:
            m.d.comb += self.phase_pop.eq(cur_pop)
        with m.If(en & ~fsm.ongoing("IDLE") & ~fsm.ongoing("CLEAR")):
            m.d.sync += cnt_active.eq(cnt_active + 1)
        return m
