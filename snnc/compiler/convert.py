"""Conversion pass: float network + calibration -> integer SNN :class:`~snnc.ir.Graph`.

Multi-strength rate coding
--------------------------
Every spiking layer ``l`` (a :class:`~snnc.compiler.floatnet.Layer` followed by a ReLU) becomes
a spiking population whose neurons emit spikes of integer strength ``0..S_l`` per timestep
(``S_l`` from ``--max-strength``, for all layers or per layer). One unit of strength stands for
an activation of ``u_l``; the input events (the 8-bit inputs themselves, every timestep) have
``u_0 = s_in``. A layer with one input quantizes its weights as ``W ~= s_w,l * W_q``
(:mod:`snnc.compiler.quantize`), so its integer input current per timestep, ``W_q . s``, is in
units of ``c_l = s_w,l * u_src``. Then::

    theta_l = max(1, round(lambda_l / S_l / c_l))   # spike unit ~ lambda_l / S_l
    bias_l  = round(b_l / c_l)
    u_l     = theta_l * c_l                         # the exact activation of one strength unit

``u_l`` is what one unit of spike strength *actually* represents once ``theta_l`` is an integer,
so the next layer's current unit is exact and the rounding of ``theta`` does not compound along
the network (using the nominal ``lambda_l / S_l`` instead would). A layer saturates at
``S_l * u_l``, about its calibrated ``lambda_l`` (at most 6 after a ReLU6). The last layer becomes
the non-spiking readout integrator (``theta = 1`` unused, ``s_max = 1``) with
``bias_L = round(b_L / c_L)``; the prediction is the argmax of its membrane after ``T``
timesteps. ``round`` rounds halves away from zero.

Convolutions, pooling, residual additions
-----------------------------------------
- A convolution is a :class:`~snnc.ir.Conv` projection, quantized like a matrix (one scale per
  layer); its bias is per output channel, repeated over positions.
- **Several inputs** (a residual addition ``relu(f(x) + x)``): the inputs ``j`` share one current
  unit ``c``, chosen so that every effective weight ``W_j * u_j / c`` fits the ``b``-bit range
  with the least squared error (:func:`~snnc.compiler.quantize.quantize_terms`); an identity
  shortcut is a 1x1 convolution with the diagonal weight ``round(u_x / c)`` (at least 1). Then
  ``theta``, ``bias`` and ``u`` follow from ``c`` as above.
- **Average pool** ``k x k`` (stride ``k``): a spiking population fed by a depthwise convolution
  of ones (kernel ``k x k``, stride ``k``), with ``bias = 0``, ``theta = k*k`` and the source's
  ``s_max``. Its input current ``sum s_i`` is in units of ``u_src / k**2``, so its unit is
  exactly ``u_src``: the phase accumulator divides by ``k**2`` and carries the remainder, and over
  any number of timesteps the pool's total strength is the floor of the window's mean total.
- **Max pool** ``k``: a :class:`~snnc.ir.MaxPool` projection into a max-pool population (the
  spiking gate of ``docs/architecture.md``), with the source's ``s_max`` and unit.
- **Core rules** (:func:`check_core_rules`): every population's outgoing projections use one
  weight width and are all dense or all convolutional, and a max pool's source feeds nothing
  else. A network that breaks one gets an error naming the layers.

Clamp policy
------------
For population ``k`` let ``(neg, pos) = input_current_bounds(graph, k)`` (the most negative and
most positive synaptic input one timestep can bring to each neuron) and ``b`` its bias. With::

    P = max over neurons j of max(pos_j + max(b_j, 0), -(neg_j + min(b_j, 0)), 1)

a spiking population gets ``v_min = -P`` and ``v_max = max(P, theta)``: the membrane keeps at most
one timestep's worth of input (a neuron that is driven harder than ``S`` spikes per step can carry
over, and a strongly inhibited one can recover within a step or two). The readout gets
``v_min = -T * P`` and ``v_max = T * P`` with ``T`` the compiled timesteps, so it never clamps
within ``T`` timesteps and its final membrane is the exact sum of its inputs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..ir import (MAX_TIMESTEPS, Conv, Dense, Graph, InputPopulation, MaxPool, Population,
                  Readout, input_current_bounds, verify)
from .errors import SnncError
from .floatnet import INPUT, FloatNet, Layer, Pool
from .quantize import Calibration, quantize_terms, quantize_weights, round_half_away

__all__ = ["STRENGTH_WIDTH", "StrengthSpec", "parse_max_strength", "check_timesteps", "check_options", "convert",
           "check_core_rules", "apply_clamps", "clamp_bound", "parse_bits_override"]

#: The refusal of ``--bias-correct`` without calibration data.
BIAS_CORRECT_NEEDS_DATA = ("--bias-correct needs calibration data (--calib FILE.npz): it "
                           "corrects each layer's bias by the mean error of its quantized "
                           "weights on it")

#: Spike strengths travel in a 4-bit field of the core's event word.
STRENGTH_WIDTH = 4
STRENGTH_LIMIT = (1 << STRENGTH_WIDTH) - 1


@dataclass(frozen=True)
class StrengthSpec:
    """``--max-strength``: a default ``S`` and per-layer overrides ``((name, S), ...)``."""
    default: int
    layers: tuple = ()

    def __str__(self) -> str:
        return ",".join([str(self.default)] + [f"{n}={v}" for n, v in self.layers])

    def as_json(self):
        """An int when there are no per-layer values (the common case), else the spec text."""
        return int(self.default) if not self.layers else str(self)


def _strength_value(text, what: str) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        value = None
    if value is None or isinstance(text, bool) or str(text).strip() != str(value) \
            or not 1 <= value <= STRENGTH_LIMIT:
        raise SnncError(f"--max-strength{what} must be an integer in 1..{STRENGTH_LIMIT} (the "
                        f"core's spike strength is {STRENGTH_WIDTH} bits wide), not {text}")
    return value


def parse_max_strength(value, default: int = STRENGTH_LIMIT) -> StrengthSpec:
    """Parse ``--max-strength``: ``S`` for every layer, or ``S,LAYER=S,...`` (``LAYER=S,...``
    alone keeps ``default`` for the unnamed layers).

    Examples
    --------
    >>> parse_max_strength("7,conv1=3,fc1=15")
    StrengthSpec(default=7, layers=(('conv1', 3), ('fc1', 15)))
    """
    if isinstance(value, StrengthSpec):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return StrengthSpec(_strength_value(value, ""))
    if not isinstance(value, str):
        raise SnncError(f"--max-strength must be an integer in 1..{STRENGTH_LIMIT} (the core's "
                        f"spike strength is {STRENGTH_WIDTH} bits wide), not {value!r}")
    found_default, layers = None, {}
    for item in value.split(","):
        item = item.strip()
        if "=" not in item:
            if found_default is not None:
                raise SnncError(f"--max-strength {value}: two values for all layers "
                                f"({found_default} and {item}); give one, then LAYER=S items")
            found_default = _strength_value(item, "")
            continue
        name, _, s = item.partition("=")
        name = name.strip()
        if not name:
            raise SnncError(f"--max-strength {value}: '{item}' has no layer name; expected S or "
                            "LAYER=S items separated by commas, e.g. 7,conv1=3")
        if name in layers:
            raise SnncError(f"--max-strength {value}: layer '{name}' is given twice")
        layers[name] = _strength_value(s, f" for layer '{name}'")
    return StrengthSpec(default if found_default is None else found_default, tuple(layers.items()))


def parse_bits_override(value) -> tuple[tuple[str, int], ...]:
    """Parse ``--bits-override``: ``LAYER=B,...`` with ``B`` in 8, 4, 2 (``()`` for none).

    Examples
    --------
    >>> parse_bits_override("conv1=8,fc=8")
    (('conv1', 8), ('fc', 8))
    """
    if value is None or value == "" or value == ():
        return ()
    if isinstance(value, dict):
        value = ",".join(f"{k}={v}" for k, v in value.items())
    if not isinstance(value, str):
        value = ",".join(f"{k}={v}" for k, v in value)
    layers = {}
    for item in value.split(","):
        name, eq, b = (part.strip() for part in item.partition("="))
        if not eq or not name:
            raise SnncError(f"--bits-override {value}: expected LAYER=BITS items separated by "
                            f"commas, e.g. conv1=8,fc=8, not '{item.strip()}'")
        if b not in ("8", "4", "2"):
            raise SnncError(f"--bits-override {value}: layer '{name}' gets '{b}' bits; the "
                            "core stores 8, 4 or 2-bit weights")
        if name in layers:
            raise SnncError(f"--bits-override {value}: layer '{name}' is given twice")
        layers[name] = int(b)
    return tuple(layers.items())


def _layer_bits(net: FloatNet, bits: int, override) -> dict[str, int]:
    """Weight width of every layer with weights; errors for names that have none."""
    layers = [n.name for n in net.nodes if isinstance(n, Layer)]
    named = dict(parse_bits_override(override))
    for name in named:
        if name in layers:
            continue
        node = net._index.get(name)
        if isinstance(node, Pool):
            raise SnncError(f"--bits-override sets '{name}', a {node.kind} pool, which has no "
                            "weights of its own; set the layers around it")
        raise SnncError(f"--bits-override names layer '{name}', which the network does not "
                        f"have; its layers with weights are: {', '.join(layers)}")
    return {name: named.get(name, bits) for name in layers}


def check_timesteps(timesteps) -> None:
    """Refuse a ``--timesteps`` value outside ``1..MAX_TIMESTEPS`` (:class:`SnncError`)."""
    if (isinstance(timesteps, bool) or not isinstance(timesteps, (int, np.integer))
            or not 1 <= timesteps <= MAX_TIMESTEPS):
        raise SnncError(f"--timesteps must be an integer in 1..{MAX_TIMESTEPS}, not {timesteps}")


def check_options(*, bits: int, timesteps: int, max_strength,
                  percentile: float | None = None) -> StrengthSpec:
    """Validate user options; raise :class:`SnncError` naming the flag and the allowed values.

    Returns the parsed ``max_strength``.
    """
    if isinstance(bits, bool) or bits not in (8, 4, 2):
        raise SnncError(f"--bits must be 8, 4 or 2, not {bits}")
    check_timesteps(timesteps)
    spec = parse_max_strength(max_strength)
    if percentile is not None and not 0 < percentile <= 100:
        raise SnncError(f"--percentile must be in (0, 100], not {percentile}")
    return spec


def _layer_strengths(net: FloatNet, spec: StrengthSpec) -> dict[str, int]:
    """``S`` for every spiking layer; errors for names that are not spiking layers."""
    spiking = [layer.name for layer in net.spiking]
    named = dict(spec.layers)
    for name in named:
        if name in spiking:
            continue
        node = net._index.get(name)
        if isinstance(node, Pool):
            raise SnncError(f"--max-strength sets '{name}', a {node.kind} pool: it passes on the "
                            f"spikes of '{node.src}' and has its strength; set '{node.src}' instead")
        if isinstance(node, Layer):
            raise SnncError(f"--max-strength sets '{name}', the readout, which does not spike")
        raise SnncError(f"--max-strength names layer '{name}', which the network does not have; "
                        f"its spiking layers are: {', '.join(spiking) or 'none'}")
    return {name: named.get(name, spec.default) for name in spiking}


def check_core_rules(graph: Graph) -> Graph:
    """Raise :class:`SnncError` if the core cannot address ``graph``'s projections.

    The core lays out each source population's outgoing synapses one way: all its outgoing
    projections use one weight width, are all dense or all convolutional, and a population that
    feeds a max pool feeds nothing else.
    """
    name = lambda k: graph.pop(k).name  # noqa: E731
    for k in range(graph.n_pops):
        out = graph.outgoing(k)
        pools = [p for p in out if isinstance(p, MaxPool)]
        if pools and len(out) > 1:
            others = ", ".join(f"'{name(p.dst)}'" for p in out if p is not pools[0])
            raise SnncError(f"layer '{name(k)}' feeds the max pool '{name(pools[0].dst)}' and also "
                            f"{others}: on the core a max pool's source feeds nothing else; let "
                            "the other layers read the pool's output, or pool in their branch "
                            "too")
        dense = [f"'{name(p.dst)}'" for p in out if isinstance(p, Dense)]
        convs = [f"'{name(p.dst)}'" for p in out if isinstance(p, Conv)]
        if dense and convs:
            raise SnncError(f"layer '{name(k)}' feeds convolutions ({', '.join(convs)}) and fully "
                            f"connected layers ({', '.join(dense)}): the core addresses a layer's "
                            "outgoing synapses one way; use 1x1 convolutions, or flatten only "
                            "the last feature map")
        bits = sorted({p.bits for p in out if not isinstance(p, MaxPool)})
        if len(bits) > 1:
            widths = ", ".join(f"'{name(p.dst)}' at {p.bits}" for p in out)
            top = max(bits)
            fix = ",".join(f"{name(p.dst)}={top}" for p in out)
            raise SnncError(f"layer '{name(k)}' feeds layers with different weight widths "
                            f"({widths} bits): the core stores a layer's outgoing weights at one "
                            f"width; give them the same bits, e.g. --bits-override {fix}")
    return graph


def clamp_bound(graph: Graph, index: int) -> int:
    """``P`` of the clamp policy for population ``index`` (see the module docstring)."""
    neg, pos = input_current_bounds(graph, index)
    b = graph.pop(index).bias
    up = pos + np.maximum(b, 0)
    down = -(neg + np.minimum(b, 0))
    return int(max(int(up.max(initial=0)), int(down.max(initial=0)), 1))


def apply_clamps(graph: Graph) -> Graph:
    """Set every population's ``v_min``/``v_max`` by the clamp policy; return a verified graph.

    Precondition: weights, biases, thresholds and ``timesteps`` are final (the bounds depend on
    them, not on the clamps). Max-pool populations keep ``v_min = v_max = 0``.
    Postcondition: ``verify(result)`` holds.
    """
    pops = []
    for k, pop in enumerate(graph.populations, start=1):
        if pop.maxpool:
            pops.append(pop)
            continue
        p = clamp_bound(graph, k)
        if pop.spiking:
            pops.append(dataclasses.replace(pop, v_min=-p, v_max=max(p, pop.theta)))
        else:
            t = graph.timesteps
            pops.append(dataclasses.replace(pop, v_min=-t * p, v_max=t * p))
    return verify(graph.replace(populations=tuple(pops)))


def _convert_pool(node: Pool, k: int, src: int, s_max: int, bits: int):
    size = node.size
    if node.kind == "max":
        pop = Population(node.name, size, np.zeros(size, np.int64), 1, s_max, 0, 0, True,
                         node.shape, maxpool=True)
        return pop, [MaxPool(src, k, int(node.kernel[0]))]
    c = node.shape[0]
    ones = np.zeros((c, c) + tuple(node.kernel), dtype=np.int64)
    ones[np.arange(c), np.arange(c)] = 1
    theta = int(np.prod(node.kernel))
    pop = Population(node.name, size, np.zeros(size, np.int64), theta, s_max, 0, theta, True,
                     node.shape)
    return pop, [Conv(src, k, ones, bits, stride=node.kernel)]


def _quantize_layer(node: Layer, units: dict, bits: int):
    """Integer weights per term and the shared current unit ``c``."""
    terms = node.terms
    if len(terms) == 1 and not terms[0].identity:
        qw = quantize_weights(terms[0].weight, bits)
        return [qw.values], qw.scale * units[terms[0].src]
    values, c, _ = quantize_terms([t.weight * units[t.src] for t in terms], bits,
                                  [t.identity for t in terms])
    return values, c


def _bias_shift(net: FloatNet, node: Layer, values, current: float, units: dict,
                means: dict) -> np.ndarray:
    """``sum_t (W_hat_t - W_t) . E[x_t]``: the mean change of ``node``'s pre-activation that
    quantizing its weights causes on the calibration data (``W_hat = c * v / u_src``)."""
    import torch
    shift = np.zeros(node.size)
    for t, v in zip(node.terms, values):
        err = dataclasses.replace(t, weight=v * (current / units[t.src]) - t.weight)
        mean = torch.from_numpy(np.asarray(means[t.src], dtype=np.float64)).reshape(1, -1)
        with torch.no_grad():
            shift += err.apply(mean, net.shape(t.src)).reshape(-1).numpy()
    return shift


def convert(net: FloatNet, calib: Calibration, *, bits: int, timesteps: int, max_strength,
            name: str = "snn", readout: Readout = Readout.MEMBRANE,
            bits_override=None, bias_correct: bool = False) -> tuple[Graph, list[dict]]:
    """Quantize ``net`` into a verified integer SNN graph.

    Parameters
    ----------
    net : FloatNet
        From :func:`snnc.compiler.extract.extract_layers`.
    calib : Calibration
        One ``lambda`` per spiking layer and the input scale.
    bits, timesteps : int
        Validated by :func:`check_options`.
    bits_override : str or sequence of (layer, bits), optional
        Other widths for some layers (mixed precision, :func:`parse_bits_override`); a layer's
        terms all take its width.
    bias_correct : bool
        Bias correction (Nagel et al. 2019): each layer's float bias minus the mean change of
        its pre-activation that weight quantization causes on the calibration data
        (``calib.means``), before it is rounded to the integer bias.
    max_strength : int, str or StrengthSpec
        ``S`` for every spiking layer, or per layer (:func:`parse_max_strength`).
    name : str
        The graph's name.
    readout : Readout
        ``MEMBRANE``: the last layer is a non-spiking integrator (argmax of its membrane).
        ``SPIKE_COUNT``: the last layer spikes like a hidden layer (threshold from the
        ``percentile`` of its positive calibration outputs, the default ``S``) and the prediction
        is the argmax of its total spike strength.

    Returns
    -------
    graph : Graph
        Verified, clamps set by :func:`apply_clamps`, core rules checked.
    layers : list of dict
        Per population (JSON-ready): name, kind (spiking, readout, maxpool, avgpool), shape,
        inputs, lambda, unit, current_unit, theta, s_max, nnz, density, bias_range.
    """
    spec = check_options(bits=bits, timesteps=timesteps, max_strength=max_strength)
    if bias_correct and calib.means is None:
        raise SnncError(BIAS_CORRECT_NEEDS_DATA)
    strengths = _layer_strengths(net, spec)
    widths = _layer_bits(net, bits, bits_override)
    if len(calib.lambdas) != len(net.spiking):
        raise SnncError(f"calibration has {len(calib.lambdas)} activation scales for "
                        f"{len(net.spiking)} spiking layers")
    lambdas = dict(zip((layer.name for layer in net.spiking), calib.lambdas))
    index, units, smax = {INPUT: 0}, {INPUT: calib.input_scale}, {}
    pops, projs, meta = [], [], []
    for node in net.nodes:
        k = len(pops) + 1
        if isinstance(node, Pool):
            pop, new = _convert_pool(node, k, index[node.src], smax[node.src], bits)
            units[node.name], lam, current = units[node.src], None, None
            inputs = [{"from": node.src, "kind": f"{node.kind}pool"}]
            kind = f"{node.kind}pool"
        else:
            b = widths[node.name]
            values, current = _quantize_layer(node, units, b)
            new = [Conv(index[t.src], k, v, b, t.stride, t.padding) if t.conv
                   else Dense(index[t.src], k, v, b) for t, v in zip(node.terms, values)]
            inputs = [{"from": t.src, "kind": "identity" if t.identity else
                       ("conv" if t.conv else "dense"), "weight_scale": current / units[t.src],
                       "nnz": int(np.count_nonzero(v))} for t, v in zip(node.terms, values)]
            b_float = node.bias
            if bias_correct:
                b_float = node.bias - _bias_shift(net, node, values, current, units, calib.means)
            bias = round_half_away(b_float / current).astype(np.int64)
            spiking = node.relu or readout is Readout.SPIKE_COUNT
            if spiking:
                if node.relu:
                    lam, s_max, kind = lambdas[node.name], strengths[node.name], "spiking"
                else:
                    lam, s_max, kind = calib.readout_lambda, spec.default, "readout (spike count)"
                theta = max(1, int(round_half_away(lam / s_max / current)))
                units[node.name] = theta * current
            else:
                lam, s_max, theta, kind = None, 1, 1, "readout"
            pop = Population(node.name, node.size, bias, theta, s_max, 0, theta, spiking,
                             node.shape)
        index[node.name], smax[node.name] = k, pop.s_max
        pops.append(pop)
        projs.extend(new)
        weights = [p.weights.size for p in new if not isinstance(p, MaxPool)]
        nnz = sum(p.nnz for p in new)
        meta.append({
            "name": node.name, "kind": kind, "shape": list(node.shape), "inputs": inputs,
            "bits": new[0].bits if new and not isinstance(new[0], MaxPool) else None,
            "lambda": lam, "unit": units[node.name] if kind != "readout" else None,
            "current_unit": current, "theta": pop.theta, "s_max": pop.s_max, "nnz": nnz,
            "density": nnz / sum(weights) if weights else None,
            "bias_range": [int(pop.bias.min(initial=0)), int(pop.bias.max(initial=0))],
        })
    graph = Graph(input=InputPopulation(INPUT, tuple(net.input_shape), calib.input_signed),
                  populations=tuple(pops), projections=tuple(sorted(projs, key=lambda p: (p.dst, p.src))),
                  timesteps=int(timesteps), name=name, readout=readout)
    return apply_clamps(check_core_rules(graph)), meta
