"""``nfhep info``: describe a model file."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

COMMAND = "info"
HELP = "print what a model file holds: flow, hyperparameters, features, provenance, parameter count"
DESCRIPTION = """\
Print a model file's flow family and hyperparameters, features and context, preprocessing, dtype, the
number of trainable parameters and tensors, and its provenance (nfhep version, training files and their
SHA-256, date, final losses). The file is fully validated on the way (--json prints the metadata as JSON).

examples:
  nfhep info model.safetensors
  nfhep info model.safetensors --json
"""

__all__ = ["describe"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model file (.safetensors)")
    p.add_argument("--json", action="store_true", help="print metadata + counts as JSON")


def describe(path: str) -> dict[str, Any]:
    """Metadata of a model file plus counts from the loaded model (validates everything)."""
    from nfhep import modelfile

    header = modelfile.read_header(path)
    model = modelfile.load(path)
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "path": str(path),
        "metadata": header["nfhep"],
        "n_parameters": int(n_params),
        "n_trainable": int(n_trainable),
        "n_tensors": len(header["tensors"]),
        "tensors": header["tensors"],
    }


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)) and len(v) > 12:
        return "[" + ", ".join(map(str, v[:12])) + f", ... ({len(v)} items)]"
    return str(v)


def run(args: argparse.Namespace, *, out=None) -> int:
    out = out if out is not None else sys.stdout
    d = describe(args.model)
    if args.json:
        print(json.dumps({k: v for k, v in d.items()}, indent=1, sort_keys=True), file=out)
        return 0
    meta = d["metadata"]
    flow = dict(meta.get("flow", {}))
    family = flow.pop("family", "?")
    members = flow.get("members") if family == "ensemble" else None
    if isinstance(members, list) and members and isinstance(members[0], dict):
        # an ensemble: the members share every option but the seed
        seeds = [m.get("seed") for m in members]
        flow = {k: v for k, v in members[0].items() if k not in ("family", "seed")}
        flow["seeds"] = seeds
        family = (
            f"ensemble of {len(members)} {members[0].get('family', '?')} flows (the average of their "
            "densities)"
        )
    lines = [
        f"model file   {d['path']}",
        f"format       {meta['format']} version {meta['version']}",
        f"flow         {family}",
    ]
    for k in sorted(flow):
        lines.append(f"  {k:<14} {_fmt(flow[k])}")
    lines += [
        f"features     {', '.join(meta.get('features', []))}  ({len(meta.get('features', []))})",
        f"context      {', '.join(meta.get('context', []) or []) or '-'}",
        f"dtype        {meta['dtype']}",
        f"parameters   {d['n_parameters']:,} ({d['n_trainable']:,} trainable) in {d['n_tensors']} tensors",
    ]
    pre = meta.get("preprocessing")
    prov = meta.get("provenance", {})
    if pre:
        lines.append("preprocessing")
        decisions = prov.get("preprocessing")
        if isinstance(decisions, list) and decisions:
            w = max(len(str(d.get("name", ""))) for d in decisions)
            for d in decisions:
                lines.append(
                    f"  {str(d.get('name')):<{w}}  {d.get('kind')}"
                    + (" (declared)" if d.get("declared") else "")
                    + f": {d.get('transform')}  [{d.get('reason')}]"
                )
        for k in sorted(pre):
            if k in ("kinds", "quantile") and isinstance(decisions, list) and decisions:
                continue  # shown above, per feature (the knots are in --json)
            lines.append(f"  {k:<14} {_fmt(pre[k])}")
    if prov.get("size_defaults"):
        lines.append("chosen from the data size")
        for line in prov["size_defaults"]:
            lines.append(f"  {line}")
    lines.append("provenance")
    for k in ("nfhep_version", "torch_version", "python_version", "created", "training_seconds"):
        if k in prov:
            lines.append(f"  {k:<16} {prov[k]}")
    hist = prov.get("history")
    if isinstance(hist, dict):
        per = hist.get("members")
        lines.append(
            "  history          " + ", ".join(f"{k}={_fmt(v)}" for k, v in hist.items() if k != "members")
        )
        if isinstance(per, list):
            for i, h in enumerate(per):
                if isinstance(h, dict):
                    lines.append(f"    member {i}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in h.items()))
    data = prov.get("data")
    if isinstance(data, dict):
        lines.append(
            f"  data             {data.get('n_entries')} entries"
            + (f", selection {data['selection']!r}" if data.get("selection") else "")
            + (f", weights {data['weights']!r}" if data.get("weights") else "")
            + (f", {data['n_dropped']} dropped" if data.get("n_dropped") else "")
        )
        for f in data.get("files", []):
            lines.append(f"    {f.get('path')}:{f.get('tree')}  sha256 {f.get('sha256')}")
    extra = {
        k: v
        for k, v in prov.items()
        if k
        not in (
            "nfhep_version",
            "torch_version",
            "python_version",
            "created",
            "training_seconds",
            "history",
            "data",
            "training",
            "preprocessing",
            "size_defaults",
        )
    }
    for k, v in extra.items():
        lines.append(f"  {k:<16} {_fmt(v)}")
    print("\n".join(lines), file=out)
    return 0
