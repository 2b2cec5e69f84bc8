"""Size before work: what writing a network's bundle takes, estimated before anything is written.

Generating a core costs time and memory with the size of its memories: Amaranth and Yosys write
every word of every memory (with its zero initial value) into ``core.v``, at about 90-110 bytes of
compiler memory per memory bit and a time that grows faster than the depth (see
docs/architecture.md, "Generator limits").
A network that is too big for the generator, the machine's memory or the output disk is
therefore refused from its counts alone, in well under a second, with the layer and the figures.

Two estimates share one check (:func:`check_footprint`):

- :func:`graph_footprint` is exact (the same counts as :func:`snnc.hw.mapping.map_graph`, without
  building any per-synapse array) and runs on the converted graph, at the start of
  :func:`snnc.compiler.bundle.write_bundle`;
- :func:`float_footprint` is a lower bound computed before quantization (which takes tens of
  seconds on tens of millions of weights): a weight ``w`` of a layer quantized on its own to
  ``q = 2**(bits-1) - 1`` levels survives every candidate scale ``s <= max|w| / q`` of
  :func:`~snnc.compiler.quantize.quantize_weights` when ``|w| >= max|w| / (2 q)``; those weights
  are certainly synapse entries. :func:`snnc.compiler.pipeline.compile_model` checks it when
  asked to (``hardware=True``, as ``snnc compile`` does).

Both are pure functions of their inputs; :func:`machine` reads the machine's free memory and disk.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..hw.convlists import DEFAULT_CONV_LISTS, conv_lists, landing_taps
from ..hw.mapping import input_fed as _input_fed
from ..hw.params import CORE_LIMITS, CoreParams
from ..ir import Conv, Graph, MaxPool, required_state_bits, weight_limit
from .errors import SnncError

__all__ = ["Footprint", "graph_footprint", "float_footprint", "memory_shapes", "bundle_bytes",
           "compile_memory", "core_limits", "machine", "check_footprint", "LIMIT_SCALE_ENV",
           "BYTES_PER_MEMORY_BIT", "BYTES_PER_ENTRY", "BASE_MEMORY"]

#: Environment variable multiplying :data:`snnc.hw.params.CORE_LIMITS` (an integer >= 1), for a
#: user who accepts a longer generation on a large machine; the machine checks still apply.
LIMIT_SCALE_ENV = "SNNC_CORE_LIMIT_SCALE"

#: Compiler memory per bit of the core's memories while Amaranth and Yosys write ``core.v``
#: (measured: 84-88 bytes per bit from 65,536 to 524,288 synapse entries), with margin.
BYTES_PER_MEMORY_BIT = 120
#: Compiler memory per synapse entry while laying out the memories and writing the images
#: (measured: about 90 bytes; int64 columns, sort order, packed words), with margin.
BYTES_PER_ENTRY = 160
#: Fixed memory of the generator: Yosys's own process (150 MB measured) and Amaranth's netlist
#: of the core's logic (about 30 MB), with margin.
BASE_MEMORY = 256 * 2**20

#: Names of the core's memories in ``core.v`` (see :mod:`snnc.hw.core`).
_MEMORIES = ("ptr_mem", "tgt_mem", "wgt_mem", "bias_mem", "v_mem", "spk_mem", "cnt_mem")


@dataclass(frozen=True)
class Footprint:
    """What one network needs from the core generator (attribute names as in
    :class:`snnc.hw.mapping.CoreImage`, so :func:`snnc.hw.mapping.core_params_for` sizes a core
    from either).

    ``layer_entries`` pairs each layer (destination population) with the synapse entries of its
    inputs, largest first. ``exact`` is False for a lower bound (:func:`float_footprint`).
    """
    n_neurons: int
    n_sources: int
    n_entries: int
    n_words: int
    n_pops: int
    pop_sizes: tuple
    n_convs: int
    max_side: int
    max_strength: int
    pool_strength: int
    state_bits: int
    has_pool: bool
    timesteps: int
    layer_entries: tuple
    array_bytes: int
    exact: bool = True
    input_fed: int = 0
    input_once: bool = False
    lanes: int = 1

    @property
    def params(self) -> CoreParams:
        """The smallest core that holds the network (as :func:`~snnc.hw.mapping.write_hardware`)."""
        from ..hw.mapping import core_params_for
        return core_params_for(self, timesteps=self.timesteps, input_once=self.input_once)


def _layers(pairs) -> tuple:
    totals: dict[str, int] = {}
    for name, n in pairs:
        totals[name] = totals.get(name, 0) + int(n)
    return tuple(sorted(totals.items(), key=lambda kv: -kv[1]))


def graph_footprint(graph: Graph, conv_layout: str = DEFAULT_CONV_LISTS, *,
                    input_once: bool = False, lanes: int = 1) -> Footprint:
    """The exact counts :func:`snnc.hw.mapping.map_graph` would lay out with ``conv_layout``
    and ``lanes`` (and the core of :func:`~snnc.hw.mapping.write_hardware` with ``input_once``),
    from ``graph``'s shapes and nonzero counts (no per-synapse arrays; a convolution's lists
    are per channel and class, not per source).

    Precondition: ``graph`` is verified. Postcondition: every count equals the corresponding
    :class:`~snnc.hw.mapping.CoreImage` field.
    """
    K = graph.n_pops
    spiking = [k == 0 or graph.pop(k).spiking for k in range(K)]
    entries = words = 0

    def region(n_entries, n_weights, per_word):
        """Entries (to the next multiple of ``lanes``) and weight words of one region."""
        rows = -(-n_weights // lanes)               # weights per bank
        return n_entries + (-n_entries % lanes), lanes * -(-rows // per_word)
    per_layer = []
    for k in range(K):
        if not spiking[k]:
            continue
        out = graph.outgoing(k)
        if out and all(isinstance(p, Conv) for p in out):
            lists = conv_lists(graph, k, conv_layout)
            per_proj = np.bincount(lists.proj, minlength=len(out))
            per_layer += [(graph.pop(p.dst).name, int(n)) for p, n in zip(out, per_proj)]
            e, w = region(lists.n_entries, lists.n_entries, 8 // out[0].bits)
            entries += e
            words += w
            continue
        weighted = in_region = 0
        per_word = 1
        for proj in out:
            name = graph.pop(proj.dst).name
            if isinstance(proj, MaxPool):
                c, h, w = graph.shape(k)
                _, ho, wo = graph.shape(proj.dst)
                n = c * min(h, ho * proj.kernel) * min(w, wo * proj.kernel)
            else:
                n = proj.nnz
                weighted += n
                per_word = 8 // proj.bits
            in_region += n
            per_layer.append((name, n))
        e, w = region(in_region, weighted, per_word)
        entries += e
        words += w
    sides = [d for k in range(K) if len(graph.shape(k)) == 3 for d in graph.shape(k)[1:]]
    pools = [graph.pop(k).s_max for k in range(1, K) if graph.pop(k).maxpool]
    arrays = [p.bias for p in graph.populations] + \
             [p.weights for p in graph.projections if not isinstance(p, MaxPool)]
    return Footprint(
        n_neurons=sum(graph.size(k) for k in range(1, K)),
        n_sources=sum(graph.size(k) for k in range(K) if spiking[k]),
        n_entries=entries, n_words=words, n_pops=K,
        pop_sizes=tuple(graph.size(k) for k in range(K)),
        n_convs=sum(isinstance(p, Conv) for p in graph.projections),
        max_side=max(sides, default=1),
        max_strength=max(p.s_max for p in graph.populations),
        pool_strength=max(pools, default=0), state_bits=required_state_bits(graph),
        has_pool=bool(pools), timesteps=graph.timesteps, layer_entries=_layers(per_layer),
        array_bytes=sum(a.nbytes for a in arrays), input_fed=_input_fed(graph),
        input_once=input_once, lanes=lanes)



def float_footprint(net, bits: int, timesteps: int = 1) -> Footprint:
    """A lower bound of :func:`graph_footprint` of ``net`` (a
    :class:`~snnc.compiler.floatnet.FloatNet`) converted at ``bits``-bit weights, before
    quantization (see the module docstring). Only the synapse counts, the neuron count and the
    array sizes are bounded; the other fields take their smallest values.
    """
    q = weight_limit(bits)
    per_layer, neurons, sizes, array_bytes = [], 0, [int(np.prod(net.input_shape))], 0
    for node in net.nodes:
        size = int(np.prod(node.shape))
        if not hasattr(node, "terms"):                # a pooling node
            continue
        neurons += size
        sizes.append(size)
        array_bytes += 8 * size
        for term in node.terms:
            array_bytes += 8 * term.weight.size
        if len(node.terms) == 1 and not node.terms[0].identity:
            term = node.terms[0]
            a = np.abs(np.asarray(term.weight, dtype=np.float64))
            wmax = float(a.max(initial=0.0))
            if wmax > 0.0:
                # A hair above the threshold so that rounding in w / scale cannot matter.
                big = a >= wmax / (2 * q) * (1 + 1e-9)
                if term.conv:      # taps that land for no source are in no list
                    src = net.shape(term.src)
                    big &= landing_taps(term.weight.shape[2:], src[1:], node.shape[1:],
                                        term.stride, term.padding)
                n = int(np.count_nonzero(big))
                per_layer.append((node.name, n))
    entries = sum(n for _, n in per_layer)
    return Footprint(
        n_neurons=neurons, n_sources=sizes[0], n_entries=entries,
        n_words=-(-entries // (8 // bits)), n_pops=len(sizes), pop_sizes=tuple(sizes),
        n_convs=0, max_side=1, max_strength=1, pool_strength=0, state_bits=4, has_pool=False,
        timesteps=timesteps, layer_entries=_layers(per_layer), array_bytes=array_bytes,
        exact=False)


def memory_shapes(params: CoreParams) -> dict[str, tuple[int, int]]:
    """``name -> (depth, width)`` of each memory of a core built from ``params``."""
    p = params
    shapes = {"ptr_mem": (p.max_sources, p.ptr_bits), "tgt_mem": (p.max_synapses, p.tgt_bits),
            "wgt_mem": (p.weight_depth, 8), "bias_mem": (p.max_neurons, p.v_bits),
            "v_mem": (p.max_neurons, p.v_bits),
            "spk_mem": (p.max_pop_size, p.source_addr_bits + p.strength_bits),
            "cnt_mem": (p.pool_depth, p.pool_count_bits),
            "spc_mem": (p.max_pops, p.counter_bits)} | (
                {"icur_mem": (p.input_current_depth, p.v_bits)} if p.input_once else {})
    if p.lanes > 1:        # banked: tgt0_mem ... of ceil(depth / lanes) words each
        for name in ("tgt_mem", "wgt_mem", "bias_mem", "v_mem", "icur_mem"):
            if name in shapes:
                depth, width = shapes.pop(name)
                stem = name.removesuffix("_mem")
                shapes.update({f"{stem}{b}_mem": (p.bank_depth(depth), width)
                               for b in range(p.lanes)})
    return shapes


def _digits_sum(n: int) -> int:
    """Total decimal digits of 0, 1, ..., n - 1."""
    total, lo, d = 0, 0, 1
    while lo < n:
        hi = min(n, 10 ** d)
        total += (hi - lo) * d
        lo, d = hi, d + 1
    return total


def _hex_line(bits: int) -> int:
    return max(1, (bits + 3) // 4) + 1


def bundle_bytes(fp: Footprint) -> dict[str, int]:
    """Upper bounds of the bundle's file sizes (bytes), by file name.

    The memory images are exact; ``arrays.npz`` is bounded by its uncompressed arrays; ``core.v``
    is the initializer lines of every memory word (exact: ``    name[i] = W'hXX;``) plus at most
    256 KB of logic (116 KB measured) and 8 KB per population and convolution register bank.
    """
    p = fp.params
    init = 0
    for name, (depth, width) in memory_shapes(p).items():
        fixed = 4 + len(name) + 1 + 4 + len(str(width)) + 2 + _hex_line(width) + 1
        init += depth * fixed + _digits_sum(depth)
    return {
        "core.v": init + 256 * 1024 + 8 * 1024 * (p.max_pops + p.max_convs),
        "mem/ptr.hex": fp.n_sources * _hex_line(p.ptr_bits),
        "mem/tgt.hex": fp.n_entries * _hex_line(p.tgt_bits),
        "mem/wgt.hex": fp.n_words * _hex_line(8),
        "mem/bias.hex": fp.n_neurons * _hex_line(p.v_bits),
        "mem/params.json": 1024 + 700 * fp.n_pops + 200 * fp.n_convs,
        "arrays.npz": fp.array_bytes + fp.array_bytes // 500 + 1024 * (2 * fp.n_pops + 4),
        "manifest.json": 65536 + 4096 * fp.n_pops,
    }


def compile_memory(fp: Footprint) -> int:
    """Peak memory (bytes) writing the bundle adds to the compiler: laying out the memories,
    then Amaranth and Yosys writing ``core.v`` (per memory bit, plus the text of ``core.v``)."""
    bits = sum(d * w for d, w in memory_shapes(fp.params).values())
    return (BASE_MEMORY + BYTES_PER_ENTRY * (fp.n_entries + fp.n_neurons + fp.n_sources)
            + BYTES_PER_MEMORY_BIT * bits + 2 * bundle_bytes(fp)["core.v"])


def core_limits(environ=None) -> dict[str, int]:
    """:data:`~snnc.hw.params.CORE_LIMITS`, times ``$SNNC_CORE_LIMIT_SCALE`` when it is set."""
    env = os.environ if environ is None else environ
    text = env.get(LIMIT_SCALE_ENV, "").strip()
    if not text:
        return dict(CORE_LIMITS)
    try:
        scale = int(text)
    except ValueError:
        scale = 0
    if scale < 1:
        raise SnncError(f"{LIMIT_SCALE_ENV} must be an integer >= 1, not {text!r}")
    return {k: v * scale for k, v in CORE_LIMITS.items()}


def _nearest_existing(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def machine(out_dir) -> dict[str, int | None]:
    """``{"memory": MemAvailable bytes, "disk": free bytes where out_dir is (or would be)}``;
    None for what cannot be read."""
    mem = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    mem = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if mem is None:
        try:
            mem = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            mem = None
    try:
        disk = shutil.disk_usage(_nearest_existing(Path(out_dir))).free
    except OSError:
        disk = None
    return {"memory": mem, "disk": disk}


def _mb(n: int) -> str:
    return f"{n / 2**30:,.1f} GB" if n >= 2**30 else f"{n / 2**20:,.1f} MB"


def _top(fp: Footprint) -> str:
    parts = [f"layer '{name}': {n:,}" for name, n in fp.layer_entries[:2] if n]
    return f" ({'; '.join(parts)} of them)" if parts else ""


def check_footprint(fp: Footprint, *, limits: dict, memory: int | None = None,
                    disk: int | None = None) -> Footprint:
    """Raise :class:`SnncError` when ``fp`` exceeds the generator's ``limits`` (see
    :func:`core_limits`), the available ``memory`` or the free ``disk`` (bytes; None = unknown,
    not checked); return ``fp`` otherwise.

    The message names the largest layers and the figures, and says what to do.
    """
    at_least = "" if fp.exact else "at least "
    problems, factor = [], 2
    if fp.n_entries > limits["synapses"]:
        factor = max(factor, -(-fp.n_entries // CORE_LIMITS["synapses"]))
        problems.append(f"the network needs {at_least}{fp.n_entries:,} synapse entries{_top(fp)}; "
                        f"a generated core holds at most {limits['synapses']:,}")
    if fp.n_neurons > limits["neurons"]:
        factor = max(factor, -(-fp.n_neurons // CORE_LIMITS["neurons"]))
        biggest = max(range(1, fp.n_pops), key=lambda k: fp.pop_sizes[k])
        problems.append(f"the network has {fp.n_neurons:,} neurons (largest population "
                        f"{fp.pop_sizes[biggest]:,}); a generated core holds at most "
                        f"{limits['neurons']:,}")
    if fp.n_sources > limits["sources"]:
        factor = max(factor, -(-fp.n_sources // CORE_LIMITS["sources"]))
        problems.append(f"the network has {fp.n_sources:,} sources (inputs plus spiking neurons); "
                        f"a generated core holds at most {limits['sources']:,}")
    if problems:
        raise SnncError("the network is too large for one generated core: " + "; ".join(problems)
                        + ". Prune more (fewer nonzero weights: --bits 2 zeroes the most), or use "
                        f"fewer or smaller layers (or set {LIMIT_SCALE_ENV}={factor} to generate "
                        "the larger core anyway: generation time grows faster than its size)")
    about = "about " if fp.exact else "at least "
    what = f"for {at_least}{fp.n_entries:,} synapse entries{_top(fp)}"
    need = compile_memory(fp)
    if memory is not None and need > memory:
        raise SnncError(f"writing the bundle needs {about}{_mb(need)} of memory {what}; this "
                        f"machine has {_mb(memory)} available: free memory, or use a smaller "
                        "network")
    size = sum(bundle_bytes(fp).values())
    if disk is not None and size > disk:
        raise SnncError(f"the bundle needs up to {_mb(size)} of disk space {what}; the output "
                        f"directory has {_mb(disk)} free: choose another -o directory or free "
                        "space")
    return fp
