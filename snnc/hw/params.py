"""Frozen parameter objects shared by the hardware (:mod:`snnc.hw`) and its twins (:mod:`snnc.sim`).

This module does not import Amaranth, so the Python models can use it on their own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["NeuronParams", "CoreParams", "CfgSel", "ParamField", "ConvField", "SourceMode",
           "Counter", "TIMING", "bits_for", "MEMBER_BITS", "CORE_LIMITS", "LANES", "MeshParams",
           "Port", "issue_stalls", "ArrayParams"]

#: Synapse lane counts a core can be built with (:attr:`CoreParams.lanes`).
LANES = (1, 2, 4, 8)

#: Largest memory depths ``snnc compile`` generates a core for (``write_bundle`` refuses larger
#: networks before writing anything; see docs/architecture.md, "Generator limits"). Not a limit
#: of the design: Amaranth and Yosys write every memory word into ``core.v``, which costs about
#: 90 bytes of compiler memory per memory bit and a time that grows faster than the depth
#: (benchmarks/core_generation.py: 262,144 synapse entries 31 s, 524,288 entries 77 s and
#: 1.2 GB; 1,049,453 entries more than 10 minutes). ``$SNNC_CORE_LIMIT_SCALE`` multiplies them.
CORE_LIMITS = {"synapses": 1 << 19, "neurons": 1 << 17, "sources": 1 << 17}

#: Width of a max-pool member index (kernels up to 7x7 = 49 members).
MEMBER_BITS = 6


def bits_for(n: int) -> int:
    """Bits needed to represent every integer in ``[0, n]``."""
    return max(1, int(n).bit_length())


def _check_int(name: str, value, lo: int, hi: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ValueError(f"{name} must be {rng}, not {value}")


@dataclass(frozen=True, kw_only=True)
class NeuronParams:
    """Widths of the phase-domain neuron update unit.

    Parameters
    ----------
    v_bits : int
        Signed width of the membrane ``V`` and of ``U = V + input + bias``.
    strength_bits : int
        Width of a spike strength; the largest ``s_max`` is ``2**strength_bits - 1``.
    """
    v_bits: int = 24
    strength_bits: int = 4

    def __post_init__(self):
        _check_int("v_bits", self.v_bits, 4, 62)
        _check_int("strength_bits", self.strength_bits, 1, 8)

    @property
    def max_strength(self) -> int:
        return (1 << self.strength_bits) - 1

    @property
    def latency(self) -> int:
        """Cycles from an accepted ``U`` to the registered ``(s, V')``: the input register, one
        per strength bit, and the output register."""
        return self.strength_bits + 2


class CfgSel(enum.IntEnum):
    """What a configuration write (``cfg_sel``) addresses."""
    PTR = 0      #: fan-out pointer of a source: ``start | count << syn_addr_bits``
    TGT = 1      #: global target neuron of a synapse entry
    WGT = 2      #: packed weight word (8 bits: one 8-bit, two 4-bit or four 2-bit weights)
    BIAS = 3     #: bias of a neuron (signed ``v_bits``)
    VMEM = 4     #: membrane of a neuron (signed ``v_bits``)
    PARAM = 5    #: population parameter, address ``pop * 16 + ParamField``
    GLOBAL = 6   #: global register: 0 = number of populations, 1 = timesteps, 2 = clear length
    CONV = 7     #: convolution geometry register, address ``conv * 16 + ConvField``


class SourceMode(enum.IntEnum):
    """How the synapse walk turns a source population's entries into targets."""
    DENSE = 0    #: entries hold the global target neuron
    CONV = 1     #: entries hold (output-channel base, ky, kx, conv id); targets are computed
    POOL = 2     #: one entry per source: (max-pool window neuron, member index)


class ParamField(enum.IntEnum):
    """Per-population parameter registers (address ``pop * 16 + field``)."""
    NBASE = 0       #: first global neuron index of the population
    SIZE = 1        #: number of neurons (sources for population 0)
    SBASE = 2       #: first global source (pointer) index
    TBASE = 3       #: first target-memory entry of the population's fan-out region
    WBASE = 4       #: first weight-memory word of the population's fan-out region
    WSHIFT = 5      #: log2(weights per word): 0 for 8-bit, 1 for 4-bit, 2 for 2-bit weights
    THETA = 6
    SMAX = 7
    VMIN = 8
    VMAX = 9
    SPIKING = 10
    SMAX_THETA = 11  #: s_max * theta, precomputed by the mapper
    SMODE = 12       #: :class:`SourceMode` of the population's fan-out
    GATE = 13        #: 1 for a spiking max-pool population


class ConvField(enum.IntEnum):
    """Per-convolution geometry registers (address ``conv * 16 + field``)."""
    PAD_Y = 0
    PAD_X = 1
    STRIDE_Y = 2
    STRIDE_X = 3
    RECIP_Y = 4    #: ceil(2**recip_shift / STRIDE_Y): q = (n * RECIP) >> recip_shift = n // stride
    RECIP_X = 5
    OUT_H = 6
    OUT_W = 7


class Counter(enum.IntEnum):
    """Counter readback addresses (``rb_sel = 1``). Spike counters follow at ``SPIKES + pop``."""
    ACTIVE = 0      #: cycles doing work (not waiting for input nor stalled by the output)
    TOTAL = 1       #: cycles busy, including the clear sweep, input waits and output stalls
    SYNOPS = 2      #: synaptic operations (weight entries applied)
    TIMESTEP = 3    #: timesteps completed
    SPIKES = 4      #: + pop: spike events of population ``pop``


@dataclass(frozen=True)
class _Timing:
    """Fixed cycle costs of the core's state machine (see docs/architecture.md, "Timing").

    The event front end fetches the next event while the current one is walked, so an event
    costs ``max(fanout, input_event)`` (input) or ``max(fanout, spike_event)`` (spikes): the
    fetch latency only shows when the walk is shorter.
    """
    input_event: int = 1      #: an input event takes at least this many walk cycles
    input_phase: int = 2      #: the input phase's first fetch (F1, F2), or of the eot alone
    drain: int = 4            #: DRAIN before each population's sweep (the synapse pipeline)
    spike_event: int = 2      #: a spike event takes at least this many walk cycles
    spike_phase: int = 3      #: the spike phase's first fetch (F0, F1, F2), or of its end alone
    input_token: int = 1      #: input once, later timesteps: a token consumed without a walk
    input_skip_eot: int = 1   #: input once, later timesteps: the eot token
    emit_eot: int = 1         #: EMIT_EOT at the end of a timestep
    emit_eol: int = 1         #: tile mode: EOL after a spiking population's sweep


TIMING = _Timing()


@dataclass(frozen=True, kw_only=True)
class CoreParams:
    """Capacity and widths of one tile; the hardware and the cycle model are built from it.

    Parameters
    ----------
    max_neurons : int
        Depth of the membrane and bias memories (all non-input neurons).
    max_sources : int
        Depth of the fan-out pointer memory (input sources plus spiking neurons).
    max_synapses : int
        Depth of the target memory (stored nonzero synapses).
    max_weight_words : int, optional
        Depth of the packed weight memory (default ``max_synapses``; at 4 and 2 bits a network
        needs fewer words than entries).
    max_pool_sources : int, optional
        Depth of the max-pool member-count memory (default ``max_sources``; 1 for a network
        without a max-pool).
    max_pops : int
        Populations including the input population.
    max_pop_size : int
        Largest population (spike buffer depth, local index width).
    v_bits, strength_bits : int
        See :class:`NeuronParams`.
    input_bits : int
        Signed width of an input event's value (9 holds both 0..255 and -127..127).
    input_current_depth : int
        Depth of the input-current memory (``icur``), 0 for none. With it the input is walked
        once per inference: in the first timestep the input events add into ``icur`` (the
        input current of the neurons ``0 .. input_current_depth - 1``, the populations the input
        feeds) instead of ``V``, every sweep adds ``icur`` the way it adds the bias, and in later
        timesteps the input tokens are only consumed. The inputs must then be the same every
        timestep (direct encoding, the contract's input); 0 walks them every timestep.
    lanes : int
        Synapse lanes, 1, 2, 4 or 8: a walk issues up to ``lanes`` consecutive entries of an
        event's list per cycle, and the sweep takes ``lanes`` neurons per cycle (one neuron
        unit each). The target and weight memories are split into ``lanes`` banks by entry
        (entry ``e`` in bank ``e % lanes``), the membrane, bias and input-current memories into
        ``lanes`` banks by neuron (neuron ``n`` in bank ``n % lanes``). Entries of one issue
        whose targets share a membrane bank take one cycle per entry in that bank, and a
        sweep group with several spikes one cycle per spike (see docs/architecture.md,
        "Synapse lanes"). The images must be mapped for the same lane count
        (:func:`snnc.hw.mapping.map_graph`).
    bank_skew : int
        With lanes: 0 puts neuron ``n`` in membrane bank ``n % lanes``; ``k >= lane_bits``
        in bank ``(n + (n >> k)) % lanes`` (:meth:`neuron_bank`), which spreads targets that
        differ by multiples of ``2**k`` (convolution channels and rows) over the banks. The row
        is ``n // lanes`` either way. ``snnc compile`` chooses it
        (:func:`snnc.compiler.banks.choose_bank_skew`); it must be 0 at one lane.
    tile : bool
        Tile mode (one tile of an array, docs/architecture.md, "Tiles"): a spiking
        population's sweep is followed by an end-of-layer token on ``out`` (``eot`` with
        its ``pop``) and its spikes come back through ``inp`` (from the mesh, the whole
        population's, from every tile) instead of the spike buffer; a population with
        ``SIZE`` 0 (no part on this tile) is not swept; the end of a timestep is ``eot`` with
        ``pop`` 0. One lane, the input walked every timestep.
    """
    max_neurons: int = 256
    max_sources: int = 512
    max_synapses: int = 8192
    max_pops: int = 4
    max_pop_size: int = 256
    v_bits: int = 24
    strength_bits: int = 4
    input_bits: int = 9
    counter_bits: int = 32
    max_convs: int = 4
    coord_bits: int = 6
    pool_count_bits: int = 12
    max_weight_words: int | None = None
    max_pool_sources: int | None = None
    input_current_depth: int = 0
    lanes: int = 1
    bank_skew: int = 0
    tile: bool = False

    def __post_init__(self):
        if self.lanes not in LANES:
            raise ValueError(f"lanes must be one of {', '.join(map(str, LANES))}, not {self.lanes!r}")
        if self.max_weight_words is not None:
            _check_int("max_weight_words", self.max_weight_words, 1, self.max_synapses)
        if self.max_pool_sources is not None:
            _check_int("max_pool_sources", self.max_pool_sources, 1, self.max_sources)
        _check_int("max_neurons", self.max_neurons, 1)
        _check_int("max_sources", self.max_sources, 1)
        _check_int("max_synapses", self.max_synapses, 1)
        _check_int("max_pops", self.max_pops, 2, 16)
        _check_int("max_pop_size", self.max_pop_size, 1)
        _check_int("input_bits", self.input_bits, 2, 16)
        _check_int("counter_bits", self.counter_bits, 8, 64)
        _check_int("max_convs", self.max_convs, 1, 64)
        _check_int("coord_bits", self.coord_bits, 1, 12)
        _check_int("pool_count_bits", self.pool_count_bits, 1, 32)
        _check_int("input_current_depth", self.input_current_depth, 0, self.max_neurons)
        NeuronParams(v_bits=self.v_bits, strength_bits=self.strength_bits)
        if not isinstance(self.tile, bool):
            raise TypeError(f"tile must be a bool, not {self.tile!r}")
        if self.tile and (self.lanes > 1 or self.input_current_depth):
            raise ValueError("a tile-mode core has one lane and walks the input every timestep "
                             f"(lanes=1, input_current_depth=0), not lanes={self.lanes}, "
                             f"input_current_depth={self.input_current_depth}")
        if self.bank_skew and not (self.lanes > 1 and self.lane_bits <= self.bank_skew < 32):
            raise ValueError(f"bank_skew must be 0 or in {self.lane_bits}..31 with lanes > 1, "
                             f"not {self.bank_skew} with {self.lanes} lanes")

    @property
    def weight_depth(self) -> int:
        """Words of the packed weight memory."""
        return self.max_synapses if self.max_weight_words is None else self.max_weight_words

    @property
    def pool_depth(self) -> int:
        """Words of the max-pool member-count memory."""
        return self.max_sources if self.max_pool_sources is None else self.max_pool_sources

    @property
    def input_once(self) -> bool:
        """The input is walked once per inference (an input-current memory holds it)."""
        return self.input_current_depth > 0

    @property
    def lane_bits(self) -> int:
        """log2(lanes): the bank of an entry or neuron is its low ``lane_bits`` bits."""
        return self.lanes.bit_length() - 1

    def neuron_bank(self, n):
        """Membrane bank of neuron ``n`` (an int or an integer numpy array)."""
        k = self.bank_skew
        return (n + (n >> k)) % self.lanes if k else n % self.lanes

    def bank_rotation(self, row):
        """``neuron_bank(row * lanes + j) == (j + bank_rotation(row)) % lanes``."""
        return (row >> (self.bank_skew - self.lane_bits)) % self.lanes if self.bank_skew else 0 * row

    def bank_depth(self, depth: int) -> int:
        """Words of one bank of a ``depth``-word memory split into ``lanes`` banks."""
        return -(-depth // self.lanes)

    @property
    def neuron(self) -> NeuronParams:
        return NeuronParams(v_bits=self.v_bits, strength_bits=self.strength_bits)

    # Derived widths -----------------------------------------------------------------------
    @property
    def neuron_addr_bits(self) -> int:
        return bits_for(self.max_neurons - 1)

    @property
    def source_addr_bits(self) -> int:
        return bits_for(self.max_sources - 1)

    @property
    def syn_addr_bits(self) -> int:
        return bits_for(self.max_synapses - 1)

    @property
    def count_bits(self) -> int:
        """Width of a source's entry count (a convolution's channel list may hold more entries
        than there are neurons, never more than the synapse memory)."""
        return bits_for(self.max_synapses)

    @property
    def local_bits(self) -> int:
        return bits_for(self.max_pop_size - 1)

    @property
    def pop_bits(self) -> int:
        return bits_for(self.max_pops - 1)

    @property
    def ptr_bits(self) -> int:
        """Source descriptor: ``start | count | y | x``."""
        return self.syn_addr_bits + self.count_bits + 2 * self.coord_bits

    @property
    def conv_bits(self) -> int:
        return bits_for(self.max_convs - 1)

    @property
    def tgt_bits(self) -> int:
        """Synapse entry: ``target | ky (3) | kx (3) | conv id`` (ky|kx hold a pool member)."""
        return self.neuron_addr_bits + 6 + self.conv_bits

    @property
    def recip_shift(self) -> int:
        """Shift of the reciprocal division; exact for strides 1..7 over ``coord_bits + 1`` bits."""
        return self.coord_bits + 4

    @property
    def clear_bits(self) -> int:
        return bits_for(max(self.max_neurons, self.max_sources))

    @property
    def gate_bits(self) -> int:
        """Bits of a packed max-pool gate state: ``best_acc | best_idx | cur_s``."""
        return self.pool_count_bits + MEMBER_BITS + self.strength_bits

    @property
    def cfg_addr_bits(self) -> int:
        return max(self.neuron_addr_bits, self.source_addr_bits, self.syn_addr_bits,
                   bits_for(self.max_pops * 16 - 1), bits_for(self.max_convs * 16 - 1))

    @property
    def cfg_data_bits(self) -> int:
        return max(self.v_bits, self.ptr_bits, self.counter_bits, self.tgt_bits,
                   self.recip_shift + 1, 8)

    @property
    def rb_bits(self) -> int:
        return max(self.v_bits, self.counter_bits)

    @property
    def sweep_latency(self) -> int:
        """SWEEP_DRAIN cycles: memory read (1) + neuron unit + the write-back cycle."""
        return 1 + self.neuron.latency

    def capacity(self) -> dict:
        """What one tile holds, by the names :meth:`fits` checks."""
        return {"neurons": self.max_neurons, "sources": self.max_sources,
                "synapses": self.max_synapses, "weight words": self.weight_depth,
                "max-pool sources": self.pool_depth, "populations": self.max_pops,
                "population size": self.max_pop_size, "state bits": self.v_bits,
                "spike strength": self.neuron.max_strength, "convolutions": self.max_convs,
                "feature map side": 1 << self.coord_bits,
                "max-pool count (timesteps x s_max)": (1 << self.pool_count_bits) - 1,
                "input-current neurons": self.input_current_depth}

    def fits(self, needs: dict) -> list[str]:
        """Reasons a network with ``needs`` (name -> amount) does not fit (empty when it fits)."""
        cap = self.capacity()
        return [f"{what}: the network needs {n}, the core holds {cap[what]}"
                for what, n in needs.items() if n > cap[what]]



def issue_stalls(src, pos, banks, n_sources: int, lanes: int):
    """Per source ``0 .. n_sources - 1``: the bank-conflict stall cycles of its walk on
    ``lanes`` lanes, given each *landing* entry's source, position in the source's walk and
    membrane bank: per issue of ``lanes`` consecutive positions, the most entries in one bank,
    less one (docs/architecture.md, "Synapse lanes")."""
    import numpy as np
    stall = np.zeros(n_sources, np.int64)
    if len(src) == 0:
        return stall
    windows = int(np.max(pos)) // lanes + 1
    key = (np.asarray(src) * windows + np.asarray(pos) // lanes) * lanes + np.asarray(banks)
    keys, mult = np.unique(key, return_counts=True)
    worst = np.zeros(n_sources * windows, np.int64)
    np.maximum.at(worst, keys // lanes, mult)
    return np.maximum(worst - 1, 0).reshape(n_sources, windows).sum(axis=1)

# The tile mesh ---------------------------------------------------------------------------------

class Port(enum.IntEnum):
    """A router's ports: its own tile, then the four neighbours (``x`` grows east, ``y`` south)."""
    LOCAL = 0
    EAST = 1
    WEST = 2
    SOUTH = 3
    NORTH = 4


@dataclass(frozen=True, kw_only=True)
class MeshParams:
    """A ``cols`` x ``rows`` mesh of routers (docs/architecture.md, "The mesh").

    Tile ``t`` sits at ``(x, y) = (t % cols, t // cols)``. A flit is a destination set (one bit
    per tile) and a ``payload_bits``-bit payload the mesh does not look at. Each router input
    buffers ``depth`` flits.
    """
    cols: int = 1
    rows: int = 1
    payload_bits: int = 32
    depth: int = 2

    def __post_init__(self):
        _check_int("cols", self.cols, 1, 16)
        _check_int("rows", self.rows, 1, 16)
        _check_int("payload_bits", self.payload_bits, 1, 256)
        _check_int("depth", self.depth, 1, 64)
        if self.cols * self.rows > 64:
            raise ValueError(f"a mesh holds at most 64 tiles, not {self.cols} x {self.rows}")

    @property
    def n_tiles(self) -> int:
        return self.cols * self.rows

    def position(self, tile: int) -> tuple[int, int]:
        return tile % self.cols, tile // self.cols

    def region(self, x: int, y: int, port: Port) -> int:
        """The destination set router ``(x, y)`` sends out of ``port`` (XY routing: first along
        ``x``, then along ``y``): tiles east or west of its column, then tiles of its own column
        south or north of it, then itself."""
        mask = 0
        for t in range(self.n_tiles):
            tx, ty = self.position(t)
            hit = {Port.EAST: tx > x, Port.WEST: tx < x,
                   Port.SOUTH: tx == x and ty > y, Port.NORTH: tx == x and ty < y,
                   Port.LOCAL: tx == x and ty == y}[Port(port)]
            mask |= int(hit) << t
        return mask

    def hops(self, src: int, dst: int) -> int:
        """Routers a flit passes between tiles ``src`` and ``dst``, both ends included."""
        (sx, sy), (dx, dy) = self.position(src), self.position(dst)
        return abs(sx - dx) + abs(sy - dy) + 1


# The tile array --------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class ArrayParams:
    """A ``cols`` x ``rows`` array of tile-mode cores (``tile``, one :class:`CoreParams` for
    all) joined by a mesh of ``mesh_depth``-flit router inputs (docs/architecture.md, "Tiles").

    A flit's payload is ``{pop, index, value, eol}``: ``index`` (``index_bits``) numbers a
    neuron within its whole population, ``value`` is a spike's strength or an input's value.
    Each tile has two inboxes of ``inbox_depth`` tokens (populations of even and of odd index).
    """
    tile: CoreParams
    cols: int = 1
    rows: int = 1
    index_bits: int = 10
    mesh_depth: int = 2
    inbox_depth: int = 1024

    def __post_init__(self):
        if not isinstance(self.tile, CoreParams) or not self.tile.tile:
            raise ValueError(f"an array's tiles are tile-mode cores (CoreParams(tile=True)), not "
                             f"{self.tile!r}")
        _check_int("index_bits", self.index_bits, 1, 24)
        _check_int("inbox_depth", self.inbox_depth, 2)
        self.mesh                      # checks cols, rows, depth

    @property
    def n_tiles(self) -> int:
        return self.cols * self.rows

    @property
    def payload_bits(self) -> int:
        return self.tile.pop_bits + self.index_bits + self.tile.input_bits + 1

    @property
    def mesh(self) -> MeshParams:
        return MeshParams(cols=self.cols, rows=self.rows, payload_bits=self.payload_bits,
                          depth=self.mesh_depth)
