"""ROOT I/O throughput of nfhep.io: writing a TTree (ZSTD-1 vs ZLIB-1) and reading features back.

Run:  PYTHONPATH=python python benchmarks/bench_io.py [--events 1000000] [--features 28]
Prints a table of seconds, MB/s (uncompressed float64 payload) and file sizes; compares uproot's own
``arrays`` call (the anchor) with nfhep's validated, chunked ``read_features`` in the same run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import uproot

from nfhep.io import RootSource, read_features, write_root


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--features", type=int, default=28)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    names = [f"f{j}" for j in range(a.features)]
    data = {n: rng.normal(size=a.events) for n in names}
    mb = a.events * a.features * 8 / 1e6
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for codec in ("zstd1", "zlib1"):
            path = os.path.join(d, f"{codec}.root")
            chunks = ({k: v[i : i + 100_000] for k, v in data.items()} for i in range(0, a.events, 100_000))
            t = time.perf_counter()
            write_root(path, "t", chunks, compression=codec)
            dt = time.perf_counter() - t
            rows.append((f"write_root {codec}", dt, mb / dt, os.path.getsize(path) / 1e6))
        path = os.path.join(d, "zstd1.root")
        t = time.perf_counter()
        with uproot.open(path) as f:
            arr = f["t"].arrays(names, library="np")
        dt = time.perf_counter() - t
        rows.append(("uproot arrays (anchor)", dt, mb / dt, None))
        del arr
        t = time.perf_counter()
        s = read_features(path, names, hash_files=False)
        dt = time.perf_counter() - t
        rows.append(("nfhep read_features", dt, mb / dt, None))
        t = time.perf_counter()
        s = read_features(path, names, hash_files=True)
        dt = time.perf_counter() - t
        rows.append(("nfhep read_features + sha256", dt, mb / dt, None))
        del s
        t = time.perf_counter()
        src = RootSource(path, names, hash_files=False)
        n = sum(len(c["x"]) for c in src.iter_chunks(0))
        dt = time.perf_counter() - t
        assert n == a.events
        rows.append(("RootSource scan + 1 shuffled pass", dt, 2 * mb / dt, None))
    print(f"{a.events} events x {a.features} float64 features ({mb:.0f} MB payload)")
    print(f"{'operation':<36}{'seconds':>9}{'MB/s':>9}{'file MB':>9}")
    for name, dt, rate, size in rows:
        print(f"{name:<36}{dt:9.2f}{rate:9.0f}{'' if size is None else f'{size:9.0f}'}")
    w = {r[0]: r[1] for r in rows}
    print(
        f"ratio zlib1/zstd1 write time: {w['write_root zlib1'] / w['write_root zstd1']:.1f}x; "
        f"read_features/uproot: {w['nfhep read_features'] / w['uproot arrays (anchor)']:.2f}x"
    )


if __name__ == "__main__":
    main()
