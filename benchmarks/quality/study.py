"""The CMoG validation study (issue 16): a thin runner over ``nfhep bench-quality`` (nfhep.quality).

The study's engine lives in the package (:mod:`nfhep.quality`, :mod:`nfhep.cmog`) so that
``nfhep bench-quality`` works from a wheel; this script only runs it with this directory as the default
output, so that ``RESULTS.md``, ``results.json`` and the plots land next to it:

    python benchmarks/quality/study.py --max-minutes 10 --jobs 2  # the committed RESULTS.md
    python benchmarks/quality/study.py --fast --out /tmp/q         # a few minutes

Every option of ``nfhep bench-quality --help`` is accepted.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from nfhep.cli import main as nfhep_main

    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        argv = [*argv, "--out", str(Path(__file__).resolve().parent)]
    return nfhep_main(["bench-quality", *argv])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
