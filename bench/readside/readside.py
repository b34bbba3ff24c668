"""Read-side commands at 10,000 / 100,000 / 1,000,000 archived WAL objects and 30 backups: wall time and
peak RSS of `status`, `check archive`, `check backup`, `backup-list` and `verify --quick`, before (the
tree at --before, e.g. main's code extracted with `git archive`) and after (this tree), on a file
repository and on moto's S3 over HTTP.

The generator writes what the commands read and nothing more: the repository record, 30 completion
markers, and the WAL objects themselves (empty files on a file repository, one-byte objects through
parallel PUTs on moto; moto keeps every object in one Python process, so a million there is impractical
and S3 stops at --s3-max). Each command runs twice in a row: the first "after" run may build the
summary of runs (a full listing, once), the second is the steady state every later call sees.

    $VENV/bin/python bench/readside/readside.py --before /tmp/readside-base/src [--counts 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.support import pg  # noqa: E402
from tests.support.s3 import MotoS3  # noqa: E402

MIB = 1 << 20
BACKUPS = 30


def seg(tli: int, n: int) -> str:
    return f"{tli:08X}{n // 256:08X}{n % 256:08X}"


def markers(count: int) -> dict[str, bytes]:
    """30 completion markers spread over the archive (their WAL is in it)."""
    from walship.backup.catalog import Marker
    from walship.repo.catalog import BackupInfo
    from walship.repo.layout import marker_key
    out = {}
    for i in range(BACKUPS):
        n = i * (count // BACKUPS)
        name = f"base_{seg(1, n)}"
        info = BackupInfo(name=name, start_time=1_000_000.0 + i, stop_time=1_000_000.5 + i,
                          start_lsn=f"{n * 16 // 4096:X}/{(n * 16 % 4096) * MIB:X}",
                          stop_lsn=f"{n * 16 // 4096:X}/{(n * 16 % 4096) * MIB + 4096:X}", timeline=1,
                          start_wal=seg(1, n), stop_wal=seg(1, n), pg_version=150000, system_identifier="7",
                          size=1, stored_size=1, duration_s=1.0)
        out[marker_key(name)] = Marker(info, 1, 1, "zstd", {}).to_json()
    return out


def record_json() -> tuple[str, bytes]:
    from walship.repo import record
    rec = record.RepositoryRecord("bench", "7", 15, 16 * MIB, "2026-12-01T00:00:00Z", "link")
    return record.RECORD_KEY, rec.to_json()


def make_file_repo(path: Path, count: int) -> None:
    (path / "wal").mkdir(parents=True)
    (path / "backups").mkdir()
    key, data = record_json()
    (path / key).write_bytes(data)
    for k, v in markers(count).items():
        (path / k).write_bytes(v)
    wal = str(path / "wal")
    for n in range(count):
        os.close(os.open(f"{wal}/{seg(1, n)}", os.O_CREAT | os.O_WRONLY, 0o644))


def make_s3_repo(moto: MotoS3, count: int, seed_summary: bool = False) -> dict:
    bucket = moto.new_bucket()
    client = moto.client()
    key, data = record_json()
    client.put_object(Bucket=bucket, Key=f"pg/{key}", Body=data)
    for k, v in markers(count).items():
        client.put_object(Bucket=bucket, Key=f"pg/{k}", Body=v)

    # The WAL objects straight into the in-process moto backend (the readers go over HTTP): a PUT per
    # object through moto's HTTP server runs at about 150 a second on this machine.
    from moto.s3.models import s3_backends
    backend = s3_backends["123456789012"]["aws"]
    for n in range(count):
        backend.put_object(bucket, f"pg/wal/{seg(1, n)}", b"x")
    if seed_summary:
        # What the readers of a repository that grew to this size would have left: a full listing of a
        # million keys through moto's server takes it (not S3) over half an hour, a page costing O(keys).
        from walship.repo.layout import WAL_INDEX_KEY
        from walship.repo.walrunindex import RunIndex
        index = RunIndex(16 * MIB, "repository record")
        index.runs[1] = [[0, count - 1, time.time()]]
        index.newest_mtime = time.time()
        client.put_object(Bucket=bucket, Key=f"pg/{WAL_INDEX_KEY}", Body=index.to_json())
    return moto.env(bucket)


def run(cmd: list[str], env: dict, src: str) -> tuple[float, float, int]:
    """(seconds, peak RSS MiB, exit code) of one walship command run from the tree at src. GNU time forks
    it from a small process: a child forked from this one (moto's server, every object in memory) would
    report this process's size as its peak."""
    full = {"PATH": os.environ["PATH"], "PYTHONPATH": src, **env}
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"readside-time-{os.getpid()}"
    proc = subprocess.run(["/usr/bin/time", "-o", str(out), "-f", "%e %M", sys.executable, "-m", "walship", *cmd],
                          env=full, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed, rss_kib = out.read_text().split()[-2:]
    out.unlink()
    return float(elapsed), int(rss_kib) / 1024, proc.returncode


def commands(conninfo: str) -> dict[str, list[str]]:
    return {"status": ["status", "--json", "--pg", conninfo],
            "check archive": ["check", "archive", "--pg", conninfo],
            "check backup": ["check", "backup"],
            "backup-list": ["backup-list"],
            "verify --quick": ["verify", "--quick"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", default="10000,100000,1000000")
    ap.add_argument("--s3-max", type=int, default=1000000)
    ap.add_argument("--before", help="src/ of the tree to compare with (e.g. main extracted by git archive)")
    ap.add_argument("--backends", default="file,s3")
    ap.add_argument("--s3-full-max", type=int, default=100000,
                    help="above this many objects on S3: no 'before' run, and the summary seeded by the generator")
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()
    import logging
    logging.getLogger("werkzeug").setLevel(logging.ERROR)     # moto's server logs every request
    base = pg.scratch_dir("readside-bench-")
    cluster = pg.Cluster(15, base)
    moto = MotoS3() if "s3" in args.backends else None
    rows = []
    try:
        cluster.initdb()
        cluster.start()
        conninfo = cluster.conninfo
        for backend in args.backends.split(","):
            for count in [int(c) for c in args.counts.split(",")]:
                if backend == "s3" and count > args.s3_max:
                    continue
                t0 = time.perf_counter()
                if backend == "file":
                    repo = base / f"repo-{count}"
                    make_file_repo(repo, count)
                    env = {"WALSHIP_REPO": f"file://{repo}"}
                else:
                    env = make_s3_repo(moto, count, seed_summary=count > args.s3_full_max)
                made = time.perf_counter() - t0
                print(f"# {backend} {count} objects generated in {made:.1f} s", flush=True)
                full = backend == "file" or count <= args.s3_full_max
                trees = ([("before", args.before)] if args.before and full else []) + [("after", str(ROOT / "src"))]
                for label, src in trees:
                    for name, cmd in commands(conninfo).items():
                        first = run(cmd, env, src)
                        second = run(cmd, env, src)
                        row = {"backend": backend, "objects": count, "tree": label, "command": name,
                               "first_s": round(first[0], 3), "s": round(second[0], 3),
                               "first_rss_mib": round(first[1], 1), "rss_mib": round(second[1], 1),
                               "exit": second[2]}
                        rows.append(row)
                        print(f"{backend:4} {count:>8} {label:6} {name:15} first {first[0]:6.2f} s "
                              f"{first[1]:6.1f} MiB, then {second[0]:6.2f} s {second[1]:6.1f} MiB, exit {second[2]}",
                              flush=True)
                if backend == "file":
                    pg.remove_tree(repo)
    finally:
        cluster.stop()
        if moto:
            moto.stop()
        pg.remove_tree(base)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
