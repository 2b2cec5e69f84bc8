"""The ``snnc`` command line: compile, simulate, verify, demo.

One entry point, :func:`main`, with one small function per subcommand. User errors
(:class:`~snnc.compiler.errors.SnncError`, :class:`~snnc.compiler.bundle.BundleError`,
:class:`~snnc.ir.VerifyError`) print ``snnc: error: <message>`` on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

from . import __version__
from .compiler.bundle import (BundleError, check_bundle_target, check_output_file, load_bundle,
                              write_bundle, write_text_atomic)
from .compiler.convert import check_timesteps
from .compiler.data import check_samples, load_npz, quantize_inputs
from .compiler.errors import SnncError
from .compiler.pipeline import DEFAULT_MAX_STRENGTH, DEFAULT_TIMESTEPS, compile_model
from .hw.convlists import CONV_LISTS, DEFAULT_CONV_LISTS
from .compiler.tiles import TARGETS
from .hw.params import LANES
from .ir import Conv, Graph, MaxPool, VerifyError
from .models.digits_cnn import CNN_MAX_STRENGTH, CNN_TIMESTEPS

__all__ = ["main", "build_parser"]

#: verify runs at most this many samples in one run (random inputs are drawn up front).
MAX_VERIFY_SAMPLES = 100_000

_EPILOG = f"""\
examples:
  snnc demo                                  train, compile and verify the digits MLP
  snnc demo --model cnn                      the digits CNN: accuracy table over bits and T
  snnc compile model.pt2 --bits 4 -o build/net   no data: thresholds from weight bounds
  snnc compile model.pt2 --bits 4 --calib calib.npz -o build/net   thresholds from data (better)
  snnc compile weights.pt --arch mynets:MLP --bits 8 --calib calib.npz -o build/net
  snnc simulate build/net --data test.npz --json results.json
  snnc simulate build/net --data test.npz --cycle-accurate --clock-mhz 48
  snnc verify build/net --data test.npz --samples 20 --simulator verilator
  snnc verify build/net --netlist --samples 3    the iCE40 gate-level netlist, under Icarus

model files:
  .pt2         torch.export.save(torch.export.export(model.eval(), (example,)), "model.pt2")
  state_dict   torch.save(model.state_dict(), "weights.pt"), compiled with --arch module:Class
  pickled      torch.save(model, "model.pt") needs --trust-model (loading runs code from it)

data files are .npz with a float array x (batch first) and optional integer labels y:
  numpy.savez("calib.npz", x=inputs, y=labels)

defaults: --timesteps {DEFAULT_TIMESTEPS} --max-strength {DEFAULT_MAX_STRENGTH} (measured on the digits MLP)

--max-strength S sets every spiking layer's largest spike strength (1..15); per layer:
  --max-strength 7,conv1=3,fc1=15     7 for all layers but conv1 (3) and fc1 (15)
  --max-strength conv1=3              3 for conv1, the default {DEFAULT_MAX_STRENGTH} for the others
layer names are those snnc compile prints; pooling layers take their source's strength.
"""


_BUILD_EPILOG = """\
examples:
  snnc build build/net --board icebreaker -o build/fpga
      the design runs on the board's oscillator (iCEBreaker: 12 MHz)
  snnc build build/net --board icebreaker -o build/fpga --clock-mhz 24
      through the PLL: 12 MHz * (DIVF+1) / ((DIVR+1) * 2^DIVQ) = 12 * 64 / (1 * 2^5) = 24 MHz

the clock:
  --clock-mhz F runs the design at the highest clock at or below F MHz that the board makes:
  its oscillator, or its PLL's output (iCE40: f_in * (DIVF+1) / ((DIVR+1) * 2^DIVQ), 16..275
  MHz; ECP5: f_in * CLKFB_DIV / CLKI_DIV, 3.125..400 MHz); never above F. The core is held in
  reset until the PLL locks, and the UART divides the achieved clock. build.json's "clock"
  section gives the oscillator, the requested and the achieved MHz and the PLL's parameters;
  nextpnr's --freq is the achieved clock.

exit status:
  0 when nextpnr's Fmax after routing is at least the clock; 1 when it is below (the bitstream
  and build.json, with "timing_met": false, are still written; the message names the
  --clock-mhz that meets the Fmax); 2 for an error.
"""


def _strength(text: str):
    """``--max-strength``: an int, or the per-layer text (checked by the compiler)."""
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else text


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in re.split(r"[,x]", text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 1,8,8 or 64, not {text!r}") from None
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"expected positive sizes like 1,8,8, not {text!r}")
    return dims


def _fraction(text: str) -> float:
    try:
        f = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction like 0.9, not {text!r}") from None
    if not 0.0 <= f < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1) like 0.9, not {text!r}")
    return f


def _range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI like 0,1 or -1,1, not {text!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise argparse.ArgumentTypeError(f"expected finite LO < HI, not {text!r}")
    return lo, hi


def _out_dir(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("the bundle directory name is empty (e.g. -o build/net)")
    return Path(text)


def _file(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("the file name is empty")
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation tools and tests)."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="snnc", formatter_class=fmt, epilog=_EPILOG,
        description="Compile trained PyTorch networks (feed-forward convolutional and linear "
                    "networks: Conv2d, Linear, BatchNorm, ReLU, pooling, residual additions) into "
                    "integer spiking neural networks and bit-exact hardware.")
    parser.add_argument("--version", action="version", version=f"snnc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("compile", formatter_class=fmt, epilog=_EPILOG,
                       help="compile a model file into a bundle (network, metadata, Verilog)",
                       description="Compile a trained model into an SNN bundle directory.")
    p.add_argument("model", type=Path, help="model file: .pt2, state_dict (with --arch), or "
                   "pickled module (with --trust-model)")
    p.add_argument("--bits", type=int, required=True, metavar="{8,4,2}",
                   help="weight width; 2 bits means ternary weights {-1, 0, 1}")
    p.add_argument("--timesteps", "-T", type=int, default=DEFAULT_TIMESTEPS, metavar="T",
                   help="timesteps per inference (default: %(default)s)")
    p.add_argument("--max-strength", "-S", type=_strength, default=DEFAULT_MAX_STRENGTH,
                   metavar="S[,LAYER=S...]",
                   help="largest spike strength, 1..15, for every spiking layer or per layer "
                        "(e.g. 7,conv1=3,fc1=15); 1 gives binary spikes (default: %(default)s)")
    p.add_argument("--calib", type=Path, metavar="FILE",
                   help="calibration data (.npz with float x, optional labels y): "
                        "representative inputs, e.g. a few hundred training samples. Each "
                        "layer's threshold comes from its activations on them. Without it, see "
                        "--data-free")
    p.add_argument("--data-free", choices=("noise", "bounds"), default="noise",
                   help="without --calib: 'noise' (default) takes the thresholds from the "
                        "activations on 1,024 random inputs drawn from --input-range; 'bounds' "
                        "from the largest activation the weights and biases allow (model-based "
                        "normalization: never saturates, but loose in deep networks)")
    p.add_argument("--bits-override", metavar="LAYER=B,...",
                   help="mixed precision: other weight widths for some layers, e.g. "
                        "conv1=8,fc=8 (first and last layers often need more bits); layer names "
                        "are those compile prints")
    p.add_argument("--equalize", action="store_true",
                   help="cross-layer equalization before calibration: rescale each ReLU layer's "
                        "channels against the layer reading them so that both quantize with "
                        "less error (same float function). Measured on the digits: helps at 4 "
                        "bits, hurts at 2 (README)")
    p.add_argument("--bias-correct", action="store_true",
                   help="with --calib: correct each layer's bias by the mean error its "
                        "quantized weights make on the calibration data (Nagel et al. 2019)")
    p.add_argument("--prune", type=_fraction, default=0.0, metavar="F",
                   help="magnitude pruning before quantization: make a fraction F of the "
                        "weights zero, e.g. 0.9 (zeros are neither stored nor walked: fewer "
                        "cycles and synapse memory). Zeros already in the model count and stay. "
                        "Default 0 (none)")
    p.add_argument("--prune-scope", choices=("layer", "global"), default="layer",
                   help="'layer' (default): every layer reaches F; 'global': one magnitude "
                        "threshold over all layers")
    p.add_argument("--input-range", type=_range, metavar="LO,HI",
                   help="without --calib: the range of every raw input value (default: 0,1, "
                        "images as ToTensor gives them)")
    p.add_argument("--percentile", type=float, default=99.9, metavar="P",
                   help="activation percentile that sets each layer's scale "
                        "(default: %(default)s)")
    p.add_argument("--arch", metavar="MODULE:CLASS",
                   help="model class for a state_dict file (module importable from the current "
                        "directory, or path/to/file.py:Class)")
    p.add_argument("--trust-model", action="store_true",
                   help="allow loading a pickled nn.Module (this runs code from the file)")
    p.add_argument("--input-shape", type=_shape, metavar="D1,D2,...",
                   help="per-sample input shape without the batch axis, e.g. 1,28,28 (default: "
                        "from the .pt2 example, else the first Linear's in_features, else the "
                        "calibration data's samples)")
    p.add_argument("--readout", choices=("membrane", "spike-count"), default="membrane",
                   help="prediction: argmax of the last layer's membrane, a non-spiking "
                        "integrator (default), or argmax of its total spike strength, the last "
                        "layer spiking like the others")
    p.add_argument("--conv-lists", choices=CONV_LISTS, default=DEFAULT_CONV_LISTS,
                   help="how the core stores convolution taps: 'class' (default) gives each "
                        "group of sources with the same border and stride phase its own "
                        "list, so a source walks only taps that reach an output (fewer "
                        "cycles, more synapse memory: about 2.3x the taps for 3x3 kernels); "
                        "'channel' keeps one list per input channel (least memory; taps "
                        "that fall outside the output cost a cycle each). Results are "
                        "identical")
    p.add_argument("--input-walk", choices=("once", "every-timestep"), default=None,
                   help="'once' (default): the core walks the input's synapses in the first "
                        "timestep only, into a per-neuron input-current memory that every "
                        "sweep adds like a bias (inputs are the same every timestep: direct "
                        "encoding); 'every-timestep' walks them each timestep (no extra "
                        "memory; for inputs that change over time; what tiles do). Results are "
                        "identical")
    p.add_argument("--lanes", type=int, choices=LANES, default=1,
                   help="synapse lanes of the core: a walk applies up to this many synapses "
                        "per cycle, from as many target, weight and membrane memory banks. "
                        "More lanes: fewer cycles per inference, more logic (a multiplier and a "
                        "bank per lane); synapses whose targets share a membrane bank in one "
                        "cycle wait a cycle each (counted exactly by simulate "
                        "--cycle-accurate). Default 1. Results are identical")
    tiles = p.add_mutually_exclusive_group()
    tiles.add_argument("--target", choices=list(TARGETS), metavar="NAME",
                       help="map the network onto a tile array of a named configuration: "
                            + "; ".join(f"'{t.name}': {t.about}" for t in TARGETS.values())
                            + ". Every layer is split over the tiles (by output channel or "
                            "neuron) and the tiles exchange spikes over a mesh of routers; the "
                            "bundle then holds array.v and each tile's images. Results are "
                            "identical; cycles differ (simulate --cycle-accurate)")
    tiles.add_argument("--tiles", type=int, metavar="N",
                       help="like --target, on a near-square mesh of N tiles (1..64) of the "
                            "smallest standard size that holds the network")
    p.add_argument("-o", "--out", type=_out_dir, required=True, metavar="DIR",
                   help="bundle directory to write: a new or empty directory, or an earlier "
                        "bundle, which is replaced as a whole once the new one is complete")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("simulate", formatter_class=fmt, epilog=_EPILOG,
                       help="run a bundle on data with the integer reference model",
                       description="Run a compiled bundle on a data set with the bit-exact "
                                   "integer reference model and report accuracy and counters.")
    p.add_argument("bundle", type=Path, help="bundle directory written by snnc compile")
    p.add_argument("--data", type=Path, required=True, metavar="FILE",
                   help=".npz with float x (and optional labels y)")
    p.add_argument("--timesteps", "-T", type=int, metavar="T",
                   help="timesteps per inference (default: the compiled value)")
    p.add_argument("--json", type=_file, metavar="FILE", help="also write the results as JSON")
    p.add_argument("--batch-size", type=int, default=256, metavar="N",
                   help="samples per reference batch (default: %(default)s)")
    p.add_argument("--cycle-accurate", action="store_true",
                   help="also run the cycle-accurate model of the bundle's core: exact cycles "
                        "per inference, per layer and per timestep, latency, utilization")
    p.add_argument("--clock-mhz", type=float, default=50.0, metavar="F",
                   help="clock for the latency figures (default: %(default)s MHz)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("verify", formatter_class=fmt, epilog=_EPILOG,
                       help="run samples on the bundle's RTL (cocotb) and compare bit for bit",
                       description="Build the bundle's generated core (core.v) under an HDL "
                                   "simulator, run N inputs through it with cocotb, and compare "
                                   "every output spike, every final membrane, the counters and "
                                   "the cycle count with the reference and the cycle model.")
    p.add_argument("bundle", type=Path, help="bundle directory written by snnc compile")
    p.add_argument("--data", type=Path, metavar="FILE",
                   help=".npz with float x; the first N samples are used (default: seeded "
                        "random inputs)")
    p.add_argument("--simulator", choices=("verilator", "icarus"), default=None,
                   help="HDL simulator (default: verilator; icarus with --netlist)")
    p.add_argument("--netlist", action="store_true",
                   help="post-synthesis check: synthesize core.v for iCE40 with yosys first "
                        "(synth_ice40, default options; 10-110 s, cached), then run the same "
                        "samples and the same bit-exact comparison on the gate-level netlist "
                        "with yosys's iCE40 cell models. Catches what synthesis changes "
                        "(inferred memories, X-propagation, simulation/synthesis mismatches). "
                        "Slow: 25-100 clock cycles per second (synthesis and one demo MLP image "
                        "took 97 s), so use few samples; a Verilator build of the netlist takes "
                        "minutes of C++ compilation")
    p.add_argument("--samples", "-n", type=int, default=10, metavar="N",
                   help="number of inputs, at most 100,000 (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed for random inputs and for the stall pattern, >= 0 "
                        "(default: %(default)s)")
    p.add_argument("--stall", type=float, default=0.0, metavar="P",
                   help="probability of an idle input cycle and of output backpressure per "
                        "cycle, 0..0.9 (default: %(default)s)")
    p.add_argument("--timesteps", "-T", type=int, metavar="T",
                   help="timesteps per inference (default: the compiled value)")
    p.add_argument("--waves", type=Path, nargs="?", const=Path("waves"), metavar="DIR",
                   help="on a mismatch, rerun the first failing sample with tracing and keep "
                        "its waveform (VCD with Verilator, FST with Icarus) in DIR "
                        "(default: ./waves)")
    p.add_argument("--json", type=_file, metavar="FILE", help="also write the report as JSON")
    p.set_defaults(func=cmd_verify)

    from .fpga.boards import BOARDS
    p = sub.add_parser("build", formatter_class=fmt,
                       help="build an FPGA bitstream of a bundle's core with a UART host "
                            "interface (iCE40, ECP5)",
                       description="Synthesize, place and route the bundle's core behind the UART "
                                   "host interface for a board (amaranth-boards; YoWASP yosys and "
                                   "nextpnr from PyPI, nothing else to install). Writes the "
                                   "bitstream, build.json (the clock, utilization per resource, "
                                   "Fmax after routing against the clock, critical path, latency "
                                   "per inference, tool versions and seed) and gateware/ "
                                   "(scripts and logs). The bitstream holds the network: its "
                                   "memories start in block RAM and its registers with their "
                                   "values; memories placed on the iCE40UP5K's SPRAM cannot be "
                                   "initialized and are loaded over the UART by snnc run-board "
                                   "(build.json: network_in_bitstream). Takes 1-4 minutes; the "
                                   "first run also compiles the tools (about 40 s, cached in "
                                   "~/.cache/YoWASP).",
                       epilog=_BUILD_EPILOG + "\nboards:\n" + "\n".join(
                           f"  {b.name:<16} {b.note}" for b in BOARDS.values()))
    p.add_argument("bundle", type=Path, help="bundle directory written by snnc compile")
    p.add_argument("--board", required=True, choices=tuple(BOARDS), help="target board")
    p.add_argument("-o", "--out", type=_out_dir, required=True, metavar="DIR",
                   help="directory for the bitstream, build.json and gateware/")
    p.add_argument("--clock-mhz", type=float, metavar="F",
                   help="run the design at F MHz or the highest clock below it that the board's "
                        "PLL makes (default: the board's oscillator, no PLL)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default: 1)")
    p.add_argument("--baud", type=int, default=115200, help="UART baud rate (default: 115200)")
    p.add_argument("--data", type=Path, metavar="FILE",
                   help=".npz whose samples give the latency per inference (cycle model); "
                        "default: 10 seeded random inputs")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("run-board", formatter_class=fmt,
                       help="run samples on a board programmed with snnc build, over its UART, "
                            "and compare bit for bit",
                       description="Run each sample on the board over the UART "
                                   "(docs/protocol.md), read back the output events, membranes "
                                   "and counters, and compare them with == against the cycle "
                                   "model (equal to the reference). When the bitstream holds "
                                   "this very bundle (build.json), only what it cannot hold "
                                   "(memories on SPRAM) is loaded; otherwise the whole network "
                                   "is loaded over the UART first. Needs pyserial (pip install "
                                   "pyserial).")
    p.add_argument("build", type=Path, help="directory written by snnc build (build.json)")
    p.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB1")
    p.add_argument("--data", type=Path, required=True, metavar="FILE",
                   help=".npz with float x (and optional labels y)")
    p.add_argument("--samples", "-n", type=int, metavar="N", help="first N samples (default: all)")
    p.add_argument("--timeout", type=float, default=2.0, metavar="S",
                   help="seconds to wait for each answer (default: %(default)s)")
    p.add_argument("--reload", action="store_true",
                   help="load the whole network over the UART even when the bitstream holds it "
                        "(after another network was loaded into the board since programming)")
    p.add_argument("--json", type=_file, metavar="FILE", help="also write the results as JSON")
    p.set_defaults(func=cmd_run_board)

    p = sub.add_parser("cache", formatter_class=fmt,
                       help="show or clear the cache of built RTL simulators",
                       description="snnc verify builds each core once per simulator and keeps "
                                   "the build in $SNNC_CACHE/rtl (default ~/.cache/snnc/rtl); "
                                   "a build takes from under 1 MB (Icarus) to about 140 MB "
                                   "(Verilator, larger cores); verify --netlist keeps its "
                                   "iCE40 netlists there too (10-20 MB each with its Icarus "
                                   "build). Show where and "
                                   "how much, or clear it (builds are redone when needed).")
    p.add_argument("--clear", action="store_true", help="remove every cached build")
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("demo", formatter_class=fmt, epilog=_EPILOG,
                       help="train, compile and verify a digits MLP (or CNN) end to end",
                       description="Train a network on scikit-learn's digits, compile it, check "
                                   "SNN accuracy with the reference model, and run test images "
                                   "through the generated RTL. --model mlp: a 64-64-10 MLP. "
                                   "--model cnn: a residual CNN (conv-BN-ReLU-maxpool, residual "
                                   "block, conv-BN-ReLU-avgpool, linear), compiled at 8, 4 and 2 "
                                   "bits and at 2 bits after quantization-aware fine-tuning "
                                   "(row 2qat; --bits 2 uses it), with a table of accuracy over "
                                   "bits and timesteps.")
    p.add_argument("--model", choices=("mlp", "cnn"), default="mlp",
                   help="which demo network (default: %(default)s)")
    p.add_argument("--out", "-o", type=_out_dir, metavar="DIR",
                   help="where the model, data and bundle go (default: build/demo, "
                        "build/demo-cnn for the CNN)")
    p.add_argument("--bits", type=int, default=4, metavar="{8,4,2}",
                   help="weight width of the bundle run on the RTL (default: %(default)s)")
    p.add_argument("--timesteps", "-T", type=int, metavar="T",
                   help=f"timesteps per inference (default: {DEFAULT_TIMESTEPS} for the MLP, "
                        f"{CNN_TIMESTEPS} for the CNN)")
    p.add_argument("--max-strength", "-S", type=_strength, metavar="S[,LAYER=S...]",
                   help=f"largest spike strength (default: {DEFAULT_MAX_STRENGTH} for the MLP, "
                        f"{CNN_MAX_STRENGTH} for the CNN)")
    p.add_argument("--rtl-samples", type=int, default=20, metavar="N",
                   help="test images to run on the RTL; 0 skips the RTL (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default: %(default)s)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    """Run the snnc command line; return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return args.func(args)
    except (SnncError, BundleError, VerifyError) as exc:
        sys.stderr.flush()
        print(f"snnc: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("snnc: interrupted", file=sys.stderr)
        return 130


# ---------------------------------------------------------------------------------------------
# compile


def _inputs(graph: Graph, k: int) -> str:
    """``"conv1: conv 3x3 4-bit, 70/72 kernel weights; ..."`` for population ``k``'s inputs."""
    parts = []
    for proj in graph.incoming(k):
        src = graph.pop(proj.src).name
        if isinstance(proj, Conv):
            kh, kw = proj.kernel
            pair = lambda v: str(v[0]) if v[0] == v[1] else f"{v[0]}x{v[1]}"  # noqa: E731
            geo = (f" stride {pair(proj.stride)}" if proj.stride != (1, 1) else "") + \
                  (f" pad {pair(proj.padding)}" if proj.padding != (0, 0) else "")
            parts.append(f"{src}: conv {kh}x{kw}{geo} {proj.bits}-bit, "
                         f"{proj.nnz}/{proj.weights.size} kernel weights")
        elif not isinstance(proj, MaxPool):
            parts.append(f"{src}: dense {proj.bits}-bit, {proj.nnz}/{proj.weights.size} synapses")
    return "; ".join(parts)


def _summary(graph: Graph, meta: dict) -> list[str]:
    """Human-readable lines describing a compiled network."""
    kind = "signed" if meta["input_signed"] else "unsigned"
    lines = [f"  {'input':<12} {graph.input.size:>6}  {'x'.join(map(str, graph.input.shape)):<9} "
             f"{kind} 8-bit events, scale {meta['input_scale']:.6g}"]
    for k, (pop, layer) in enumerate(zip(graph.populations, meta["layers"]), start=1):
        shape = "x".join(map(str, pop.shape))
        src = graph.pop(graph.incoming(k)[0].src).name
        if pop.maxpool:
            what = f"max pool {graph.incoming(k)[0].kernel}x{graph.incoming(k)[0].kernel} of " \
                   f"{src}, s_max {pop.s_max}"
        elif layer.get("kind") == "avgpool":
            what = f"average pool of {src}: theta {pop.theta}, s_max {pop.s_max}"
        elif pop.spiking:
            what = f"spiking  theta {pop.theta}, s_max {pop.s_max}; {_inputs(graph, k)}"
        else:
            what = f"readout  (non-spiking integrator); {_inputs(graph, k)}"
        clamp = "" if pop.maxpool else f"; v in [{pop.v_min}, {pop.v_max}]"
        lines.append(f"  {pop.name:<12} {pop.size:>6}  {shape:<9} {what}{clamp}")
    lines.append(f"  timesteps {graph.timesteps}, membrane state {meta['state_bits']} bits, "
                 f"{graph.n_neurons} neurons, {graph.nnz} synapses and kernel weights")
    if meta.get("snn_calib_accuracy") is not None:
        lines.append(f"  SNN accuracy on the calibration set: {meta['snn_calib_accuracy']:.2%} "
                     f"(float {meta['ann_calib_accuracy']:.2%})")
    elif meta.get("ann_calib_accuracy") is not None:
        lines.append(f"  float ANN accuracy on the calibration set: "
                     f"{meta['ann_calib_accuracy']:.2%}")
    pruning = meta.get("pruning")
    if pruning:
        parts = [f"{r['name']} {r['zeros_after'] / r['weights']:.1%}"
                 + (f" (had {r['zeros_before'] / r['weights']:.1%})" if r["zeros_before"] else "")
                 for r in pruning["layers"]]
        lines.append(f"  pruned to {pruning['fraction']:.1%} zeros ({pruning['scope']}), before "
                     f"quantization: {', '.join(parts)}")
    for note in meta.get("notes", []):
        lines.append(f"  note: {note}")
    return lines


def _files(out: Path) -> str:
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    shown = [n for n in names if "/" not in n]
    nested = len(names) - len(shown)
    return ", ".join(shown) + (f" (+{nested} in subdirectories)" if nested else "")


def cmd_compile(args) -> int:
    from .hw.mapping import MappingError

    check_bundle_target(args.out)
    tiled = args.target is not None or args.tiles is not None
    if tiled and args.lanes > 1:
        raise SnncError("a tile array's cores have one synapse lane: drop --lanes, or compile "
                        "for one core without --target/--tiles")
    if tiled and args.input_walk == "once":
        raise SnncError("a tile array walks the input every timestep (its tiles receive the "
                        "input as events): drop --input-walk once, or compile without "
                        "--target/--tiles")
    if args.tiles is not None and not 1 <= args.tiles <= 64:
        raise SnncError(f"--tiles must be 1..64, not {args.tiles}")
    graph, meta = compile_model(args.model, bits=args.bits, timesteps=args.timesteps,
                                max_strength=args.max_strength, calib=args.calib,
                                percentile=args.percentile, arch=args.arch,
                                trust_model=args.trust_model, input_shape=args.input_shape,
                                readout=args.readout, hardware=True,
                                input_range=args.input_range, prune=args.prune,
                                prune_scope=args.prune_scope, bits_override=args.bits_override,
                                data_free=args.data_free, equalize=args.equalize,
                                bias_correct=args.bias_correct)
    target = None
    if args.target is not None:
        target = TARGETS[args.target]
    elif args.tiles is not None:
        from .compiler.tiles import target_for_tiles
        target = target_for_tiles(args.tiles, graph, args.conv_lists)
    if target is not None and target.n_tiles >= 4:
        print(f"snnc: generating array.v for {target.n_tiles} tiles (about 3 s per tile)",
              file=sys.stderr, flush=True)
    try:
        bundle = write_bundle(args.out, graph, meta, hardware=True, conv_lists=args.conv_lists,
                              input_once=args.input_walk != "every-timestep", lanes=args.lanes,
                              target=target)
    except MappingError as exc:
        raise SnncError(f"the network does not map onto the core: {exc}") from None
    print(f"snnc: compiled {args.model} ({meta['format']}) -> {args.out}")
    for line in _summary(graph, meta):
        print(line)
    for warning in meta.get("warnings", []):
        print(f"snnc: warning: {warning}", file=sys.stderr)
    if bundle.tiled:
        from .report.tiles import format_tiling
        for line in format_tiling(bundle.core):
            print(line)
        print(f"  files: {_files(args.out)}")
        return 0
    mem = bundle.core["usage"]["memory_bits"]
    print("  core memory, bits: " + ", ".join(f"{k} {v:,}" for k, v in mem.items() if v) +
          f" (total {sum(mem.values()):,})")
    params = bundle.core["params"]
    if params.get("lanes", 1) > 1:
        k = params.get("bank_skew", 0)
        bank = f"(n + (n >> {k})) % {params['lanes']}" if k else f"n % {params['lanes']}"
        print(f"  synapse lanes: {params['lanes']}; neuron n in membrane bank {bank} (the fewest "
              "bank conflicts of the choices)")
    print(f"  files: {_files(args.out)}")
    return 0


# ---------------------------------------------------------------------------------------------
# simulate


def simulate(graph: Graph, x_int: np.ndarray, *, timesteps: int | None = None,
             batch_size: int = 256, progress: bool = True) -> dict:
    """Run the reference model in batches; return predictions and per-sample counters.

    Returns a dict of int64 arrays: ``prediction`` (N,), ``synops`` (N,), ``input_events`` (N,),
    ``spike_counts`` and ``spike_strength`` (N, n_populations).
    """
    from tqdm import tqdm

    from .sim.reference import batch_limit, run

    T = graph.timesteps if timesteps is None else timesteps
    check_timesteps(T)
    if batch_size < 1:
        raise SnncError(f"--batch-size must be >= 1, not {batch_size}")
    batch_size = min(batch_size, batch_limit(graph, T))
    keys = ("prediction", "synops", "input_events", "spike_counts", "spike_strength")
    parts = {k: [] for k in keys}
    n = len(x_int)
    with tqdm(total=n, unit="sample", file=sys.stderr, disable=not progress or n <= batch_size,
              desc="reference") as bar:
        for start in range(0, n, batch_size):
            res = run(graph, x_int[start:start + batch_size], timesteps=T)
            for k in keys:
                parts[k].append(getattr(res, k))
            bar.update(min(batch_size, n - start))
    return {k: np.concatenate(v) for k, v in parts.items()}


def counters_report(graph: Graph, res: dict, y=None) -> dict:
    """JSON-ready summary of :func:`simulate`'s output (means are per inference)."""
    names = [p.name for p in graph.populations]
    out = {"samples": int(len(res["prediction"]))}
    if y is not None:
        out["accuracy"] = float(np.mean(res["prediction"] == y))
        out["correct"] = int(np.sum(res["prediction"] == y))
    out["mean"] = {
        "synops": float(res["synops"].mean()),
        "input_events": float(res["input_events"].mean()),
        "spikes": {n: float(v) for n, v in zip(names, res["spike_counts"].mean(axis=0))},
        "spike_strength": {n: float(v) for n, v in zip(names, res["spike_strength"].mean(axis=0))},
    }
    return out


def _print_counters(report: dict, indent: str = "  ") -> None:
    mean = report["mean"]
    print(f"{indent}per inference: {mean['synops']:,.1f} synaptic ops, "
          f"{mean['input_events']:,.1f} input events")
    for name, count in mean["spikes"].items():
        if count or mean["spike_strength"][name]:
            print(f"{indent}  {name}: {count:,.1f} spikes, total strength "
                  f"{mean['spike_strength'][name]:,.1f}")


def _warn_longer_run(graph: Graph, T: int) -> None:
    """The compiler sizes the readout's membrane bounds for the compiled T; say so when a run is
    longer (the contract still holds: the readout clamps at v_min/v_max as documented)."""
    if T > graph.timesteps and not graph.pop(len(graph.populations)).spiking:
        print(f"snnc: note: the bundle was compiled for T={graph.timesteps}; its readout membrane "
              f"bounds are sized for that, so at T={T} the readout may clamp. Recompile with "
              f"--timesteps {T} for full headroom.", file=sys.stderr)


def _check_timesteps(T) -> None:
    if T is not None:
        check_timesteps(T)


def _check_clock(mhz: float) -> None:
    if not (math.isfinite(mhz) and mhz > 0):
        raise SnncError(f"--clock-mhz must be a positive number of MHz, not {mhz}")


def cmd_simulate(args) -> int:
    _check_timesteps(args.timesteps)
    if args.batch_size < 1:
        raise SnncError(f"--batch-size must be >= 1, not {args.batch_size}")
    _check_clock(args.clock_mhz)
    if args.json is not None:
        check_output_file(args.json)
    bundle = load_bundle(args.bundle)
    graph = bundle.graph
    if args.cycle_accurate and not bundle.tiled:
        _core_params(bundle)
    x, y = load_npz(args.data)
    x = check_samples(x, graph.input.shape, what=str(args.data))
    x_int = quantize_inputs(x, bundle.meta)
    T = graph.timesteps if args.timesteps is None else args.timesteps
    _warn_longer_run(graph, T)
    if args.cycle_accurate:
        _check_core_fits(bundle, T)
    res = simulate(graph, x_int, timesteps=T, batch_size=args.batch_size)
    report = counters_report(graph, res, y)
    print(f"snnc: simulated {args.bundle} on {args.data}: {report['samples']} samples, "
          f"T={T}")
    if y is not None:
        print(f"  accuracy {report['accuracy']:.2%} ({report['correct']}/{report['samples']})")
    _print_counters(report)
    cycles = None
    if args.cycle_accurate:
        cycles = (_cycle_accurate_tiles if bundle.tiled else _cycle_accurate)(
            bundle, x_int, T, args.clock_mhz)
    if args.json is not None:
        doc = {"bundle": str(args.bundle), "data": str(args.data), "timesteps": T, **report,
               "predictions": [int(v) for v in res["prediction"]]}
        if cycles is not None:
            doc["cycle_accurate"] = cycles
        write_text_atomic(args.json, json.dumps(doc, indent=2) + "\n")
        print(f"  wrote {args.json}")
    return 0


def _core_params(bundle):
    from .hw.params import CoreParams
    if bundle.tiled:
        raise SnncError(f"{bundle.path} is a tile array (target {bundle.core['target']['name']}): "
                        "bitstreams and boards take single-core bundles for now; compile the "
                        "model without --target/--tiles for them (simulate and verify take both)")
    if not bundle.core.get("params"):
        raise SnncError(f"{bundle.path} has no hardware section: recompile it with snnc compile")
    try:
        return CoreParams(**bundle.core["params"])
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{bundle.path}/manifest.json has invalid core parameters: {exc}") from None


def _cycle_accurate(bundle, x_int, T, clock_mhz) -> dict:
    """Run the cycle-accurate model; check it against the reference; print and return the report."""
    from .report.cycles import cycle_report, format_cycle_report
    from .sim.core import CoreModel
    from .sim.reference import batch_limit, run

    _check_clock(clock_mhz)
    params = _core_params(bundle)
    image = bundle.image()
    step = min(256, batch_limit(bundle.graph, T))     # both keep every timestep's spikes
    runs = [CoreModel(params).run(image, x_int[i:i + step], T)
            for i in range(0, len(x_int), step)]
    ref_synops = 0
    for i, r in zip(range(0, len(x_int), step), runs):
        ref = run(bundle.graph, x_int[i:i + step], T)
        if not np.array_equal(r.v_final, np.concatenate(ref.v_final, axis=1)):
            raise SnncError("internal error: the cycle model disagrees with the reference")
        ref_synops += int(ref.synops.sum())
    merged = runs[0]
    if len(runs) > 1:
        import dataclasses
        cat = lambda name: np.concatenate([getattr(r, name) for r in runs])
        merged = dataclasses.replace(
            merged, cycles=cat("cycles"), synops=cat("synops"), spike_counts=cat("spike_counts"),
            cycles_per_timestep=cat("cycles_per_timestep"),
            spike_buffer_high_water=cat("spike_buffer_high_water"), bank_stalls=cat("bank_stalls"),
            spikes=[np.concatenate([r.spikes[k] for r in runs], axis=1) for k in range(len(merged.spikes))],
            cycles_per_phase={key: np.concatenate([r.cycles_per_phase[key] for r in runs])
                              for key in merged.cycles_per_phase})
    rep = cycle_report(bundle.graph, merged, clock_mhz=clock_mhz,
                       reference_synops=ref_synops / max(1, len(x_int)))
    print("  cycle-accurate model (results identical to the reference):")
    for line in format_cycle_report(rep).splitlines():
        print(f"    {line}")
    return rep


def _check_core_fits(bundle, T: int) -> None:
    """The bundle's core (or every tile) holds a run of ``T`` timesteps (the max-pool counts
    grow with T): say so before any work, naming the limit."""
    from .hw.mapping import MappingError, check_fits
    try:
        if bundle.tiled:
            params, _ = bundle.array_params()
            for img in bundle.array_image().tiles:
                check_fits(img, params.tile, T)
        else:
            check_fits(bundle.image(), _core_params(bundle), T)
    except MappingError as exc:
        raise SnncError(f"--cycle-accurate at T={T}: {exc} (the bundle's hardware was sized "
                        f"for T={bundle.graph.timesteps}; recompile with --timesteps {T})") from None


def _cycle_accurate_tiles(bundle, x_int, T, clock_mhz) -> dict:
    """The tile array's twin: exact cycles of every tile and the mesh; print and return."""
    from .report.tiles import array_cycle_report, format_array_cycle_report, run_array

    _check_clock(clock_mhz)
    runs, ref_synops = run_array(bundle, x_int, T)
    rep = array_cycle_report(runs, bundle.core, clock_mhz=clock_mhz,
                             reference_synops=ref_synops)
    print("  cycle-accurate model of the tile array (results identical to the reference):")
    for line in format_array_cycle_report(rep).splitlines():
        print(f"    {line}")
    return rep


# ---------------------------------------------------------------------------------------------
# verify


def cmd_verify(args) -> int:
    from .fpga.netlist import SYNTH_SCRIPT, SynthesisFailed, yosys_version
    from .hw.mapping import MappingError
    from .rtl.runner import BuildFailed, SimulatorMissing
    from .rtl.verify import verify_on_rtl
    from .testing import random_inputs

    from .hw.images import ImageError

    if not 1 <= args.samples <= MAX_VERIFY_SAMPLES:
        raise SnncError(f"--samples must be in 1..{MAX_VERIFY_SAMPLES:,}, not {args.samples}; "
                        f"split a longer run into several runs with different --seed values")
    if not 0.0 <= args.stall <= 0.9:
        raise SnncError(f"--stall must be in 0..0.9, not {args.stall}")
    if args.seed < 0:
        raise SnncError(f"--seed must be >= 0, not {args.seed}")
    _check_timesteps(args.timesteps)
    if args.json is not None:
        check_output_file(args.json)
    if args.waves is not None:
        if args.waves.exists() and not args.waves.is_dir():
            raise SnncError(f"--waves {args.waves} is a file; give a directory for waveforms")
        check_output_file(args.waves / "sample0", what="--waves")
    bundle = load_bundle(args.bundle)
    graph = bundle.graph
    if bundle.tiled and (args.netlist or args.waves is not None):
        raise SnncError(f"{args.bundle} is a tile array: --netlist and --waves are not available "
                        "for tile arrays yet (verify it without them)")
    if not bundle.tiled:
        _core_params(bundle)
    T = graph.timesteps if args.timesteps is None else args.timesteps
    _warn_longer_run(graph, T)
    if args.data is not None:
        x, _ = load_npz(args.data)
        x = check_samples(x, graph.input.shape, what=str(args.data))[:args.samples]
        x_int = quantize_inputs(x, bundle.meta)
        source = f"the first {len(x_int)} samples of {args.data}"
    else:
        x_int = random_inputs(np.random.default_rng(args.seed), graph, args.samples)
        source = f"{args.samples} random inputs (seed {args.seed})"
    simulator = args.simulator or ("icarus" if args.netlist else "verilator")
    try:
        what = (f"the iCE40 netlist of {args.bundle} (yosys {yosys_version()}, synth_ice40)"
                if args.netlist else str(args.bundle))
        print(f"snnc: verifying {what} on {simulator} with {source}, T={T}", flush=True)
        if bundle.tiled:
            from .rtl.verify_array import verify_array_bundle
            rep = verify_array_bundle(bundle, x_int, timesteps=T, simulator=simulator,
                                      seed=args.seed, idle=args.stall)
        else:
            rep = verify_on_rtl(bundle, x_int, timesteps=T, simulator=simulator, seed=args.seed,
                                idle=args.stall, stall=args.stall, waves_dir=args.waves,
                                netlist=args.netlist)
    except SynthesisFailed as exc:
        raise SnncError(f"{args.bundle}: {exc}") from None
    except SimulatorMissing as exc:
        raise SnncError(f"{exc}; or choose the other --simulator") from None
    except BuildFailed as exc:
        what = "the iCE40 netlist of the core" if args.netlist else "the core"
        raise SnncError(f"{simulator} rejected {what} of {args.bundle}: {exc}") from None
    except ImageError as exc:
        raise SnncError(f"{args.bundle}: {exc}; recompile the bundle") from None
    except RuntimeError as exc:   # the HDL build or the cocotb run itself failed
        raise SnncError(f"the RTL simulation did not complete: {exc}") from None
    except MappingError as exc:
        raise SnncError(str(exc)) from None
    for r in rep.per_sample:
        status = "ok" if r["exact"] else "MISMATCH"
        counter = (f"RTL: last tile's TOTAL {r['rtl_total_cycles']}" if bundle.tiled
                   else f"RTL counter {r['rtl_active_cycles']}")
        print(f"  sample {r['sample']:>4}: {status:<8} {r['cycles']:>9} cycles "
              f"({counter}), prediction {r['prediction_rtl']}")
        for m in r["mismatches"]:
            print(f"      {m}")
    print(f"  {rep.summary()}")
    for w in rep.waves:
        print(f"  waveform of the first failing sample: {w}")
    if args.json is not None:
        doc = {"bundle": str(args.bundle), "simulator": simulator, "netlist": args.netlist,
               "timesteps": T, "inputs": source, "all_exact": rep.all_exact,
               "samples": rep.per_sample, "waves": rep.waves}
        if args.netlist:
            doc["yosys"] = yosys_version()
            doc["synthesis"] = list(SYNTH_SCRIPT)
        write_text_atomic(args.json, json.dumps(doc, indent=2) + "\n")
        print(f"  wrote {args.json}")
    return 0 if rep.all_exact else 1


# ---------------------------------------------------------------------------------------------
# build


def _check_build_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise SnncError(f"-o {out} is a file; give a directory for the build")
    if out.is_dir() and any(out.iterdir()) and not (out / "build.json").exists():
        raise SnncError(f"-o {out} is not empty and holds no earlier build (build.json); "
                        "choose a new or empty directory")
    check_output_file(out / "build.json", what="-o")


def cmd_build(args) -> int:
    from .fpga.build import build_bitstream, clock_plan, format_report, timing_problem
    from .sim.core import CoreModel
    from .testing import random_inputs

    if args.clock_mhz is not None:
        _check_clock(args.clock_mhz)
    if args.seed < 0:
        raise SnncError(f"--seed must be >= 0, not {args.seed}")
    if not 300 <= args.baud <= 3_000_000:
        raise SnncError(f"--baud must be in 300..3000000, not {args.baud}")
    _check_build_dir(args.out)
    clock_plan(args.board, args.clock_mhz)          # a clock the board cannot make: say so now
    bundle = load_bundle(args.bundle)
    params = _core_params(bundle)
    if args.data is not None:
        x, _ = load_npz(args.data)
        x_int = quantize_inputs(check_samples(x, bundle.graph.input.shape, what=str(args.data)),
                                bundle.meta)
    else:
        x_int = random_inputs(np.random.default_rng(0), bundle.graph, 10)
    run = CoreModel(params).run(bundle.image(), x_int, bundle.graph.timesteps)
    print(f"snnc: building {args.bundle} for {args.board}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = build_bitstream(bundle, args.board, args.out, clock_mhz=args.clock_mhz, seed=args.seed,
                          baud=args.baud, latency_cycles=run.cycles.tolist())
    for line in format_report(doc).splitlines():
        print(f"  {line}")
    print(f"  wrote {args.out / 'build.json'}")
    problem = timing_problem(doc)
    if problem:
        sys.stdout.flush()
        print(f"snnc: {problem}", file=sys.stderr)
        return 1
    return 0


def cmd_run_board(args) -> int:
    from .fpga.host import BoardError, open_serial
    from .fpga.run import run_on_board
    from .hw.images import ImageError

    if args.samples is not None and args.samples < 1:
        raise SnncError(f"--samples must be >= 1, not {args.samples}")
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise SnncError(f"--timeout must be a positive number of seconds, not {args.timeout}")
    if args.json is not None:
        check_output_file(args.json)
    try:
        info = json.loads((args.build / "build.json").read_text())
        bundle_path, baud = Path(info["bundle"]), int(info["baud"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SnncError(f"{args.build} is not a build directory of snnc build (build.json: "
                        f"{exc})") from None
    if not bundle_path.is_dir():
        raise SnncError(f"{args.build}/build.json names the bundle {bundle_path}, which is not "
                        f"there any more: rebuild with snnc build")
    bundle = load_bundle(bundle_path)
    x, y = load_npz(args.data)
    x = check_samples(x, bundle.graph.input.shape, what=str(args.data))[:args.samples]
    x_int = quantize_inputs(x, bundle.meta)
    try:
        client = open_serial(args.port, baud, timeout=args.timeout)
        rep = run_on_board(client, bundle, x_int, build=info, reload=args.reload)
    except ImportError as exc:
        raise SnncError(str(exc)) from None
    except ImageError as exc:
        raise SnncError(f"{bundle_path}: {exc}") from None
    except (OSError, BoardError) as exc:
        raise SnncError(f"{args.port}: {exc}") from None
    return _print_board_report(args, rep, y)


def _print_board_report(args, rep: dict, y) -> int:
    print(f"snnc: ran {len(rep['samples'])} samples on the board at {args.port}")
    print(f"  {rep['load']['message']}")
    for s in rep["samples"]:
        status = "ok" if s["exact"] else "MISMATCH"
        print(f"  sample {s['sample']:>4}: {status:<8} {s['cycles']:>9} cycles, "
              f"prediction {s['prediction']}")
        for m in s["mismatches"]:
            print(f"      {m}")
    n_ok = sum(s["exact"] for s in rep["samples"])
    print(f"  board vs reference: {n_ok}/{len(rep['samples'])} samples bit-exact -> "
          f"{'BIT-EXACT' if rep['all_exact'] else 'MISMATCH'}")
    if not rep["all_exact"] and rep["load"]["built_in"]:
        print("  the board ran the network its bitstream holds; if another network was loaded "
              "into it since it was programmed, run again with --reload (or reprogram it)")
    if y is not None:
        pred = np.array([s["prediction"] for s in rep["samples"]])
        print(f"  accuracy {np.mean(pred == y[:len(pred)]):.2%}")
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(rep, indent=2) + "\n")
        print(f"  wrote {args.json}")
    return 0 if rep["all_exact"] else 1


# ---------------------------------------------------------------------------------------------
# cache


def cmd_cache(args) -> int:
    from .rtl.runner import cache_root, cache_usage, clear_cache

    if args.clear:
        builds, size = clear_cache()
        print(f"snnc: removed {builds} cached RTL build(s), {size / 1e6:,.1f} MB, from "
              f"{cache_root()}")
        return 0
    builds, size = cache_usage()
    print(f"snnc: RTL build cache {cache_root()}: {builds} build(s), {size / 1e6:,.1f} MB "
          "(snnc cache --clear removes them; set SNNC_CACHE to move it)")
    return 0


# ---------------------------------------------------------------------------------------------
# demo (in snnc/demo.py)


def cmd_demo(args) -> int:
    from .demo import cmd_demo as run_demo
    return run_demo(args)
