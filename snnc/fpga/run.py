"""Run a bundle's samples on a board (``snnc run-board``) and compare them bit for bit.

A bitstream from ``snnc build`` holds its bundle's network (``build.json``:
``network_in_bitstream``). When it holds the very bundle being run (the same
``manifest_sha256``), the host sends only the configuration writes the bitstream cannot hold
(memories on SPRAM); otherwise, or with ``reload``, it loads the bundle's own memory images
(:mod:`snnc.hw.images`) over the UART. Then it runs each sample and reads back every output
event, every membrane and the counters; they are compared with ``==`` against the cycle model,
which equals the reference model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..hw.images import LOADED_MEMORIES, config_writes_from_images
from ..hw.params import CfgSel, CoreParams, Counter
from ..sim.core import CoreModel

__all__ = ["board_mismatches", "run_on_board", "LoadPlan", "load_plan"]


@dataclass(frozen=True)
class LoadPlan:
    """The configuration writes ``snnc run-board`` sends, and why."""
    writes: list            #: the writes to send
    total: int              #: the network's writes
    built_in: bool          #: the bitstream holds this bundle's network
    message: str            #: one line for the output

    def as_dict(self) -> dict:
        return {"built_in": self.built_in, "writes_sent": len(self.writes),
                "writes_total": self.total, "message": self.message}


def load_plan(writes, build: dict, manifest_sha256: str, *, reload: bool = False) -> LoadPlan:
    """Which of a bundle's configuration ``writes`` a board programmed with ``build`` (its
    ``build.json``) needs for the bundle whose manifest hash is ``manifest_sha256``.

    All of them, unless the bitstream holds this very bundle (``network_in_bitstream`` with the
    same ``bundle_manifest_sha256``) and ``reload`` is not asked for: then only the writes of
    the memories the bitstream does not initialize (those on SPRAM), and the register writes
    only if the bitstream's registers do not start with the network. The timesteps register
    needs no write either way: every RUN command writes it (docs/protocol.md).
    """
    writes = list(writes)
    n = len(writes)
    nib = build.get("network_in_bitstream")
    if reload:
        return LoadPlan(writes, n, False, f"--reload: loading all {n} configuration writes over "
                                          "the UART")
    if not isinstance(nib, dict) or not nib.get("bundle_manifest_sha256"):
        return LoadPlan(writes, n, False, f"the bitstream holds no network (built by an older "
                                          f"snnc): loading all {n} configuration writes over "
                                          "the UART")
    if nib["bundle_manifest_sha256"] != manifest_sha256:
        return LoadPlan(writes, n, False, f"the bitstream holds another bundle's network "
                                          f"(manifest {nib['bundle_manifest_sha256'][:12]}, this "
                                          f"bundle {manifest_sha256[:12]}): loading all {n} "
                                          "configuration writes over the UART")
    held = set(nib.get("memories") or ())
    missing = [k for k in LOADED_MEMORIES if k not in held]
    sels = {int(CfgSel[k.upper()]) for k in missing}
    if not nib.get("registers"):
        sels |= {int(CfgSel.PARAM), int(CfgSel.CONV), int(CfgSel.GLOBAL)}
    send = [w for w in writes if w[0] in sels]
    parts = ", ".join(missing)
    if missing and set(missing) <= set(nib.get("spram_loaded_by_host") or ()):
        parts += " on SPRAM"
    parts = "; ".join(filter(None, [parts, "" if nib.get("registers") else "the registers"]))
    what = (f"sending only the {len(send)} of {n} configuration writes it does not hold "
            f"({parts})" if send else f"no configuration writes sent (all {n} held)")
    return LoadPlan(send, n, True, f"the bitstream holds this bundle's network (manifest "
                                   f"{manifest_sha256[:12]}): {what}")


def board_mismatches(model, b: int, got: dict) -> list[str]:
    """What differs between the cycle model's sample ``b`` and a board's answer ``got``."""
    out = []
    want = [list(map(int, e)) for e in model.events[b]]
    if [list(map(int, e)) for e in got["events"]] != want:
        out.append(f"output events differ ({len(want)} expected, {len(got['events'])} received)")
    if "membranes" in got and list(got["membranes"]) != model.v_final[b].tolist():
        n = next(i for i, (a, c) in enumerate(zip(model.v_final[b].tolist(), got["membranes"]))
                 if a != c) if len(got["membranes"]) == model.v_final.shape[1] else None
        out.append("final membranes differ" + (f" (first at neuron {n})" if n is not None else ""))
    cnt = got["counters"]
    checks = [("active cycles", int(model.cycles[b]), cnt[Counter.ACTIVE]),
              ("synaptic ops", int(model.synops[b]), cnt[Counter.SYNOPS]),
              ("timesteps", len(model.cycles_per_timestep[b]), cnt[Counter.TIMESTEP])]
    checks += [(f"spikes of population {k}", int(model.spike_counts[b, k]), cnt[Counter.SPIKES + k])
               for k in range(1, model.spike_counts.shape[1])]
    out += [f"{name}: expected {a}, got {c}" for name, a, c in checks if a != c]
    return out


def run_on_board(client, bundle, x_int, *, timesteps: int | None = None, build: dict | None = None,
                 reload: bool = False) -> dict:
    """Run ``x_int`` on the board behind ``client`` (a :class:`snnc.fpga.host.BoardClient`),
    programmed with the bitstream that ``build`` (its ``build.json``) describes.

    Returns ``{"load": ..., "samples": [...], "all_exact": bool}``: ``load`` is the
    :class:`LoadPlan` (as a dict) that decided which configuration writes were sent; each sample
    has the board's prediction, its cycle counter and the mismatches against the cycle model
    (empty when bit-exact).
    """
    params = CoreParams(**bundle.core["params"])
    T = bundle.graph.timesteps if timesteps is None else int(timesteps)
    x = np.asarray(x_int, dtype=np.int64).reshape(len(x_int), -1)
    writes = config_writes_from_images(bundle.path, bundle.core, params, T)
    plan = load_plan(writes, build or {}, bundle.manifest_sha256, reload=reload)
    model = CoreModel(params).run(bundle.image(), x, T)
    got = client.run_samples(writes, x, T, load=plan.writes)
    samples = []
    for b, g in enumerate(got):
        mism = board_mismatches(model, b, g)
        samples.append({"sample": b, "exact": not mism, "mismatches": mism,
                        "prediction": g["prediction"], "cycles": int(g["counters"][Counter.ACTIVE])})
    return {"load": plan.as_dict(), "samples": samples,
            "all_exact": all(s["exact"] for s in samples) and bool(samples)}
