"""The ``nfhep`` command line.

Each subcommand lives in its own module of this package and defines

- ``COMMAND``: the subcommand's name,
- ``HELP``: one line for ``nfhep --help``,
- ``DESCRIPTION``: the longer text for ``nfhep COMMAND --help``,
- ``add_arguments(parser)`` and ``run(args) -> int``.

Modules are discovered, so adding a command never touches this file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]


def _command_modules():
    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "COMMAND") and hasattr(mod, "run"):
            mods.append(mod)
    return sorted(mods, key=lambda m: m.COMMAND)


def build_parser() -> argparse.ArgumentParser:
    from nfhep import __version__

    parser = argparse.ArgumentParser(
        prog="nfhep",
        description=(
            "nfhep: normalizing flows for high-energy physics. Train flows on ROOT ntuples, sample and "
            "evaluate them, and compare samples with two-sample statistics."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"nfhep {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        p = sub.add_parser(
            mod.COMMAND,
            help=mod.HELP,
            description=getattr(mod, "DESCRIPTION", mod.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``nfhep`` command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("nfhep: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, OSError) as err:
        # Bad input: a clear message, no traceback. (Set NFHEP_DEBUG=1 for the traceback.)
        import os

        if os.environ.get("NFHEP_DEBUG"):
            raise
        print(f"nfhep {args.command}: error: {err}", file=sys.stderr)
        return 1
