"""Lossless (de)serialization of a :class:`Graph` as a JSON-ready dict plus named int arrays."""

from __future__ import annotations

import numpy as np

from .graph import Conv, Dense, Graph, InputPopulation, MaxPool, Population, Readout
from .verify import VerifyError, verify

__all__ = ["graph_to_dict", "graph_from_dict"]


def graph_to_dict(graph: Graph) -> tuple[dict, dict[str, np.ndarray]]:
    """Split ``graph`` into a JSON-ready description and a dict of integer arrays."""
    arrays: dict[str, np.ndarray] = {}
    pops = []
    for k, pop in enumerate(graph.populations, start=1):
        arrays[f"bias_{k}"] = pop.bias
        pops.append({"name": pop.name, "size": pop.size, "shape": list(pop.shape),
                     "theta": pop.theta, "s_max": pop.s_max, "v_min": pop.v_min,
                     "v_max": pop.v_max, "spiking": pop.spiking, "maxpool": pop.maxpool,
                     "bias": f"bias_{k}"})
    projs = []
    for proj in graph.projections:
        if isinstance(proj, MaxPool):
            projs.append({"kind": "maxpool", "src": proj.src, "dst": proj.dst, "kernel": proj.kernel})
            continue
        key = f"weights_{proj.src}_{proj.dst}"
        arrays[key] = proj.weights
        d = {"kind": "dense", "src": proj.src, "dst": proj.dst, "bits": proj.bits,
             "weights": key, "nnz": proj.nnz}
        if isinstance(proj, Conv):
            d.update(kind="conv", stride=list(proj.stride), padding=list(proj.padding))
        projs.append(d)
    desc = {
        "name": graph.name,
        "input": {"name": graph.input.name, "shape": list(graph.input.shape),
                  "signed": graph.input.signed},
        "populations": pops,
        "projections": projs,
        "timesteps": graph.timesteps,
        "readout": graph.readout.value,
    }
    return desc, arrays


def _projection(p: dict, arrays):
    kind = p.get("kind", "dense")
    src, dst = int(p["src"]), int(p["dst"])
    if kind == "maxpool":
        return MaxPool(src=src, dst=dst, kernel=int(p["kernel"]))
    weights, bits = np.asarray(arrays[p["weights"]]), int(p["bits"])
    if kind == "conv":
        return Conv(src=src, dst=dst, weights=weights, bits=bits,
                    stride=tuple(int(v) for v in p["stride"]),
                    padding=tuple(int(v) for v in p["padding"]))
    if kind != "dense":
        raise ValueError(f"unknown projection kind {kind!r}")
    return Dense(src=src, dst=dst, weights=weights, bits=bits)


def graph_from_dict(desc: dict, arrays) -> Graph:
    """Rebuild and verify a graph from :func:`graph_to_dict`'s output.

    Raises
    ------
    VerifyError
        If a field is missing, has the wrong type, or the graph breaks an IR invariant.
    """
    try:
        inp = desc["input"]
        graph = Graph(
            input=InputPopulation(name=str(inp["name"]), shape=tuple(int(v) for v in inp["shape"]),
                                  signed=bool(inp["signed"])),
            populations=tuple(
                Population(name=str(p["name"]), size=int(p["size"]), bias=np.asarray(arrays[p["bias"]]),
                           theta=int(p["theta"]), s_max=int(p["s_max"]), v_min=int(p["v_min"]),
                           v_max=int(p["v_max"]), spiking=bool(p["spiking"]),
                           shape=tuple(int(v) for v in p.get("shape", ())),
                           maxpool=bool(p.get("maxpool", False)))
                for p in desc["populations"]),
            projections=tuple(_projection(p, arrays) for p in desc["projections"]),
            timesteps=int(desc["timesteps"]),
            readout=Readout(desc["readout"]),
            name=str(desc.get("name", "snn")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, VerifyError):
            raise
        raise VerifyError(f"malformed network description: {type(exc).__name__}: {exc}") from None
    return verify(graph)
