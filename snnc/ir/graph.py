"""The snnc intermediate representation: a small, immutable, integer-typed SNN graph.

A :class:`Graph` is a list of populations in evaluation order and the projections between them.
Population 0 is the input population (it only emits events); the last population is the readout.
Every array is an integer numpy array, made read-only on construction, and two IR objects are
equal when their fields are (arrays compared with :func:`numpy.array_equal`).

The exact integer semantics are in ``docs/architecture.md`` and are implemented by
:mod:`snnc.sim.reference`; this module only describes the network.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields

import numpy as np

__all__ = [
    "WEIGHT_BITS", "INPUT_BITS", "STRENGTH_LIMIT", "MAX_KERNEL", "MAX_TIMESTEPS",
    "InputPopulation", "Population", "Dense", "Conv", "MaxPool", "Readout", "Graph",
    "weight_limit", "frozen_array", "conv_output_shape",
]

#: Largest convolution / pooling kernel side.
MAX_KERNEL = 7

#: Most timesteps of a run. The core's counters would take far more; the reference model keeps
#: every population's spikes for all timesteps (memory grows with T), and conversion accuracy
#: saturates within a few hundred timesteps.
MAX_TIMESTEPS = 4096

#: Weight widths the compiler and the core support.
WEIGHT_BITS = (8, 4, 2)
#: Input events carry 8-bit integers (unsigned 0..255 or signed -127..127).
INPUT_BITS = 8
#: The largest maximum spike strength the IR allows (the core may allow less).
STRENGTH_LIMIT = 255


def weight_limit(bits: int) -> int:
    """Largest weight magnitude for ``bits``-bit symmetric weights: ``2**(bits-1) - 1``."""
    return (1 << (bits - 1)) - 1


def frozen_array(values, *, ndim: int, name: str) -> np.ndarray:
    """Return ``values`` as a read-only contiguous int64 array with ``ndim`` dimensions."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "iub":
        raise TypeError(f"{name} must hold integers, not {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), not shape {arr.shape}")
    arr.setflags(write=False)
    return arr


class _ArrayEq:
    """Value equality for frozen dataclasses that hold numpy arrays."""

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
                        and a.shape == b.shape and np.array_equal(a, b)):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None


class Readout(enum.Enum):
    """How the prediction is read from the last population."""
    #: argmax of the final membrane of the non-spiking readout population (ties: lowest index).
    MEMBRANE = "membrane"
    #: argmax of the total spike strength of the last spiking population (ties: lowest index).
    SPIKE_COUNT = "spike_count"


@dataclass(frozen=True, eq=False)
class InputPopulation(_ArrayEq):
    """The input population: ``size`` sources that emit one graded event per nonzero input.

    Parameters
    ----------
    name : str
    shape : tuple of int
        The model's per-sample input shape (its product is ``size``).
    signed : bool
        Inputs are in ``[-127, 127]`` when True, ``[0, 255]`` when False.
    """
    name: str
    shape: tuple[int, ...]
    signed: bool

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def value_range(self) -> tuple[int, int]:
        return (-127, 127) if self.signed else (0, 255)


@dataclass(frozen=True, eq=False)
class Population(_ArrayEq):
    """A population of phase-domain neurons (or the non-spiking readout integrator).

    Per timestep, after all input of the timestep has been accumulated into ``V``::

        U = V + bias
        s = min(U // theta, s_max) if spiking and U >= theta else 0
        V = clamp(U - s * theta, v_min, v_max)

    A population with ``maxpool=True`` is a spiking max-pool gate (Rueckauer et al. 2017): its
    only input is a :class:`MaxPool` projection, and its update is the gate rule of
    ``docs/architecture.md`` (``bias``, ``theta``, ``v_min``, ``v_max`` are unused: 0, 1, 0, 0).

    Parameters
    ----------
    name : str
    size : int
    bias : int array, shape (size,)
        Added every timestep.
    theta : int
        Threshold (the phase modulus), > 0.
    s_max : int
        Maximum spike strength, >= 1 (1 gives binary spikes).
    v_min, v_max : int
        Clamp bounds applied once per timestep, ``v_min <= 0 < theta <= v_max``.
    spiking : bool
        False for the readout integrator (it never spikes).
    shape : tuple of int
        Layout of the neurons, ``(C, H, W)`` for feature maps (row-major, like ``torch.flatten``);
        ``()`` means ``(size,)``.
    maxpool : bool
        The population is a spiking max-pool gate.
    """
    name: str
    size: int
    bias: np.ndarray
    theta: int
    s_max: int
    v_min: int
    v_max: int
    spiking: bool = True
    shape: tuple = ()
    maxpool: bool = False

    def __post_init__(self):
        object.__setattr__(self, "bias", frozen_array(self.bias, ndim=1, name=f"{self.name}.bias"))
        object.__setattr__(self, "shape", tuple(int(v) for v in self.shape) or (int(self.size),))


@dataclass(frozen=True, eq=False)
class Dense(_ArrayEq):
    """A fully connected projection ``src -> dst`` with ``bits``-bit signed weights.

    ``weights[j, i]`` connects source ``i`` of population ``src`` to neuron ``j`` of ``dst``.
    Zero weights are absent synapses (pruned or quantized to zero).
    """
    src: int
    dst: int
    weights: np.ndarray
    bits: int

    def __post_init__(self):
        object.__setattr__(self, "weights",
                           frozen_array(self.weights, ndim=2, name=f"projection {self.src}->{self.dst}"))

    @property
    def nnz(self) -> int:
        return int(np.count_nonzero(self.weights))


def conv_output_shape(in_shape, out_channels, kernel, stride, padding) -> tuple[int, int, int]:
    """``(C_out, H_out, W_out)`` of a convolution (floor division, like PyTorch)."""
    _, h, w = in_shape
    (kh, kw), (sy, sx), (py, px) = kernel, stride, padding
    return (out_channels, (h + 2 * py - kh) // sy + 1, (w + 2 * px - kw) // sx + 1)


@dataclass(frozen=True, eq=False)
class Conv(_ArrayEq):
    """A 2-D convolution projection ``src (C_in, H, W) -> dst (C_out, H_out, W_out)``.

    ``weights[co, ci, ky, kx]`` (signed ``bits``-bit integers); ``stride`` and ``padding`` are
    ``(y, x)`` pairs; zero padding; groups = 1 (a depthwise kernel is a full kernel whose
    off-diagonal channel pairs are zero). An event of source ``(ci, y, x)`` reaches output
    ``(co, oy, ox)`` with weight ``weights[co, ci, ky, kx]`` whenever
    ``oy * sy - py + ky == y`` and ``ox * sx - px + kx == x``.
    """
    src: int
    dst: int
    weights: np.ndarray
    bits: int
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)

    def __post_init__(self):
        object.__setattr__(self, "weights",
                           frozen_array(self.weights, ndim=4, name=f"conv {self.src}->{self.dst}"))
        object.__setattr__(self, "stride", tuple(int(v) for v in self.stride))
        object.__setattr__(self, "padding", tuple(int(v) for v in self.padding))

    @property
    def kernel(self) -> tuple[int, int]:
        return tuple(self.weights.shape[2:])

    @property
    def nnz(self) -> int:
        return int(np.count_nonzero(self.weights))


@dataclass(frozen=True, eq=False)
class MaxPool(_ArrayEq):
    """Spiking max-pool ``src (C, H, W) -> dst (C, H // k, W // k)``: windows of ``k x k``,
    stride ``k``, no padding (rows and columns past the last whole window are dropped)."""
    src: int
    dst: int
    kernel: int

    @property
    def nnz(self) -> int:
        return 0


@dataclass(frozen=True, eq=False)
class Graph(_ArrayEq):
    """A whole SNN: populations in evaluation order, projections, and the run configuration.

    Parameters
    ----------
    input : InputPopulation
    populations : tuple of Population
        Neuron populations in evaluation order; population index ``k`` in projections refers to
        ``populations[k - 1]`` (index 0 is the input).
    projections : tuple of Dense, Conv or MaxPool
    timesteps : int
        Default number of timesteps ``T``.
    readout : Readout
    """
    input: InputPopulation
    populations: tuple[Population, ...]
    projections: tuple
    timesteps: int
    readout: Readout = Readout.MEMBRANE
    name: str = "snn"

    def pop(self, index: int):
        """Population by graph index (0 is the input population)."""
        return self.input if index == 0 else self.populations[index - 1]

    def size(self, index: int) -> int:
        return self.pop(index).size

    @property
    def n_pops(self) -> int:
        """Number of populations including the input population."""
        return 1 + len(self.populations)

    def shape(self, index: int) -> tuple[int, ...]:
        return tuple(self.pop(index).shape)

    def incoming(self, index: int) -> tuple:
        return tuple(p for p in self.projections if p.dst == index)

    def outgoing(self, index: int) -> tuple:
        return tuple(p for p in self.projections if p.src == index)

    @property
    def n_neurons(self) -> int:
        return sum(p.size for p in self.populations)

    @property
    def nnz(self) -> int:
        return sum(p.nnz for p in self.projections)

    def replace(self, **changes) -> "Graph":
        import dataclasses
        return dataclasses.replace(self, **changes)

