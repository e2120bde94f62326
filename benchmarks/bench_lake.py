"""Lake benchmark: ``output=`` (the Delta lake) beside plain ``Export.to_parquet``.

For each size (MB of ``responses-by-submission.jsonl``) the export is generated once with
the emulator's generator (``bench_load.generate``, cached in ``--workdir``) and committed
into an export cache. Each contender runs in a fresh interpreter, ``--repeat`` times
(median seconds, largest peak RSS), from the cached archive with no parsed-table cache:

* ``cold``        ``load_batch_export(batch_id, export_id=..., offline=True)`` without
  ``output=``: the same cold parse into the parsed-table cache, no lake (the bound: the
  baseline, measured in the same run);
* ``lake``        the same verb with ``output=<empty lake>``: parse streamed into the
  parsed-table cache, the Delta tables written from its files, load record last;
* ``merge1pct``   the same verb loading a second export of the same batch holding 1 % new
  responses into a copy of the lake that holds the first one (the partition has rows:
  keys read, new keys appended, no file rewritten);
* ``lake_ref``    (with ``--ref DIR``) ``lake`` with the package imported from another
  checkout ``DIR`` (e.g. the main branch), to compare two versions in one run;
* ``to_parquet``  (only with ``--contenders``) ``read_export(archive).to_parquet(dir)``.

Usage::

    python benchmarks/bench_lake.py [--sizes 100,1000] [--workdir DIR] [--repeat 3]
        [--contenders cold,lake,merge1pct] [--ref DIR]

Seconds (wall) and CPU seconds (the process and its parse workers) are medians of
``--repeat`` runs, peak RSS the largest (``VmHWM`` of the measuring process where Linux
has it, else ``ru_maxrss``, which on Linux keeps the peak of the process that started it;
parse worker processes are not included). Ratios are against ``cold``
(``lake``: the lake's overhead over the parse it cannot avoid) and against ``lake``
(``merge1pct``), all measured in the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_load import BATCH_ID, MB, MEMBER, SUBMISSIONS_PER_MB, generate, peak_rss_mb


def _cache_entry(cache: Path, archive: Path, export_id: str) -> None:
    """Commit ``archive`` into the export cache at ``cache`` as ``export_id``."""
    from prolific_ingest import ExportCache, ExportFilter, ExportRef

    store = ExportCache(str(cache))
    ref = ExportRef("batch", BATCH_ID)
    if store.lookup(ref, export_id) is not None:
        return
    with store.lock(ref, export_id):
        staging = store.staging(ref, export_id)
        shutil.copyfile(archive, staging)
        with open(archive, "rb") as fh:  # streamed: a child inherits no large peak
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        store.commit(
            ref,
            export_id,
            staging,
            filter=ExportFilter(),
            size=archive.stat().st_size,
            sha256=digest,
            etag=None,
            source_url=None,
        )


def _drop_table_cache(cache: Path) -> None:
    for tables in cache.rglob("tables"):
        if tables.is_dir():
            shutil.rmtree(tables)


# -- measurements (each in its own process) ---------------------------------------------------


def _to_parquet(spec: dict[str, Any]) -> dict[str, Any]:
    from prolific_ingest import read_export

    exp = read_export(spec["archive"])
    written = exp.to_parquet(spec["dest"])
    return {"rows": exp.row_counts["answers"], "files": len(written)}


def _cold(spec: dict[str, Any]) -> dict[str, Any]:
    from prolific_ingest import load_batch_export

    exp = load_batch_export(
        BATCH_ID, export_id=spec["export_id"], offline=True, cache=spec["cache"], progress=False
    )
    return {"rows": exp.row_counts["answers"]}


def _lake(spec: dict[str, Any]) -> dict[str, Any]:
    from prolific_ingest import load_batch_export

    exp = load_batch_export(
        BATCH_ID,
        export_id=spec["export_id"],
        offline=True,
        cache=spec["cache"],
        output=spec["dest"],
        progress=False,
    )
    assert exp.written is not None
    assert not exp.written.skipped
    return {"rows": exp.row_counts["answers"], "modes": exp.written.modes}


MEASURES = {
    "to_parquet": _to_parquet,
    "cold": _cold,
    "lake_ref": _lake,
    "lake": _lake,
    "merge1pct": _lake,
}


def _child(kind: str, spec_json: str) -> None:
    import resource

    import pandas  # noqa: F401  (imports outside the timed region)
    import pyarrow  # noqa: F401

    import prolific_ingest  # noqa: F401

    spec = json.loads(spec_json)
    started = time.perf_counter()
    result = MEASURES[kind](spec)
    result["seconds"] = time.perf_counter() - started
    result["rss_mb"] = peak_rss_mb()
    # CPU seconds of this process and of its (reaped) parse workers: less noisy than wall
    # time on a shared machine.
    own, workers = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    result["cpu_s"] = own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime
    print(json.dumps(result))


def measure(kind: str, spec: dict[str, Any], ref: str | None = None) -> dict[str, Any]:
    """One measurement in a fresh interpreter (``ref``: import the package from there)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROLIFIC_")}
    if ref is not None:
        env["PYTHONPATH"] = ref
    done = subprocess.run(
        [sys.executable, __file__, "--measure", kind, json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=3600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _member_mb(archive: Path) -> float:
    import zipfile

    with zipfile.ZipFile(archive) as zf:
        return zf.getinfo(MEMBER).file_size / MB


def run_size(
    size_mb: int, workdir: Path, repeat: int, contenders: list[str], ref: str | None = None
) -> dict[str, Any]:
    """Measure the contenders on one size; returns medians and peaks."""
    from prolific_ingest.testing import ExportSpec, make_batch_export

    archive = generate(workdir, size_mb)
    extra = workdir / f"export-{size_mb}mb-plus1pct.zip"
    if not extra.exists():
        n = max(1, round(size_mb * SUBMISSIONS_PER_MB / 100))
        make_batch_export(
            extra, ExportSpec(n_submissions=n, owner_id=BATCH_ID, uploads=False, seed=99)
        )
    cache = workdir / f"cache-{size_mb}"
    _cache_entry(cache, archive, f"bench-{size_mb}")
    _cache_entry(cache, extra, f"bench-{size_mb}-plus1pct")
    if "merge1pct" in contenders and "lake" not in contenders:
        contenders = [*contenders, "lake"]
    order = [k for k in MEASURES if k in contenders]
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in order}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        base_lake = Path(tmp) / "base-lake"
        for i in range(repeat):
            for kind in order:
                _drop_table_cache(cache)
                dest = Path(tmp) / f"{kind}-{i}"
                spec = {"archive": str(archive), "cache": str(cache), "dest": str(dest)}
                spec["export_id"] = f"bench-{size_mb}"
                if kind == "merge1pct":
                    shutil.copytree(base_lake, dest)
                    spec["export_id"] = f"bench-{size_mb}-plus1pct"
                runs[kind].append(measure(kind, spec, ref if kind == "lake_ref" else None))
                if kind == "lake" and not base_lake.exists():
                    shutil.copytree(dest, base_lake)
                if kind != "merge1pct" or i:
                    shutil.rmtree(dest, ignore_errors=True)
    mb = _member_mb(archive)
    out: dict[str, Any] = {"jsonl_mb": mb}
    for kind, rs in runs.items():
        seconds = statistics.median(r["seconds"] for r in rs)
        out[kind] = {
            "seconds": seconds,
            "rss_mb": max(r["rss_mb"] for r in rs),
            "mb_per_s": mb / seconds,
            "modes": rs[-1].get("modes"),
            "cpu_s": statistics.median(r["cpu_s"] for r in rs),
            "runs": [round(r["seconds"], 2) for r in rs],
            "rss_runs": [round(r["rss_mb"]) for r in rs],
        }
    return out


def _ratio(r: dict[str, Any], kind: str) -> str:
    base = {"lake": "cold", "lake_ref": "cold", "merge1pct": "lake", "to_parquet": "cold"}.get(kind)
    if base is None or base not in r:
        return "baseline" if kind == "cold" else ""
    seconds = r[kind]["seconds"] / r[base]["seconds"]
    cpu = r[kind]["cpu_s"] / r[base]["cpu_s"]
    what = "lake (first load)" if base == "lake" else base
    return f"{seconds:.3f}x {what} time, {cpu:.3f}x its CPU"


def report(size_mb: int, r: dict[str, Any]) -> str:
    lines = [f"== {size_mb} MB target ({r['jsonl_mb']:.0f} MB of JSONL)"]
    for kind in MEASURES:
        if kind not in r:
            continue
        m = r[kind]
        lines.append(
            f"{kind:<11} {m['seconds']:8.2f} s  cpu {m['cpu_s']:7.2f} s  {m['mb_per_s']:7.1f} MB/s  "
            f"peak RSS {m['rss_mb']:7.0f} MB  {_ratio(r, kind)}  runs {m['runs']} "
            f"rss {m['rss_runs']}"
        )
    if "lake" in r and "cold" in r:
        extra = r["lake"]["seconds"] - r["cold"]["seconds"]
        lines.append(f"lake overhead over the cold load: {extra:+.2f} s")
    if "lake" in r and "lake_ref" in r:
        ratio = r["lake"]["seconds"] / r["lake_ref"]["seconds"]
        rss = r["lake"]["rss_mb"] / r["lake_ref"]["rss_mb"]
        cpu = r["lake"]["cpu_s"] / r["lake_ref"]["cpu_s"]
        lines.append(f"lake vs lake_ref: {ratio:.3f}x time, {cpu:.3f}x CPU, {rss:.3f}x peak RSS")
    if "merge1pct" in r:
        lines.append(f"merge1pct modes: {r['merge1pct']['modes']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "bench-lake"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--contenders", default="cold,lake,merge1pct")
    parser.add_argument("--ref", help="another checkout to measure as lake_ref")
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        _child(*args.measure)
        return 0
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for size in (int(s) for s in args.sizes.split(",")):
        contenders = [c for c in args.contenders.split(",") if c]
        if args.ref and "lake_ref" not in contenders:
            contenders.append("lake_ref")
        unknown = sorted(set(contenders) - set(MEASURES))
        if unknown:
            parser.error(f"unknown contenders {unknown} (known: {sorted(MEASURES)})")
        result = run_size(size, workdir, args.repeat, contenders, args.ref)
        print(report(size, result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
