"""Metrics in the Prometheus text format, for node_exporter's textfile collector.

wal-push and backup-push each update their own gauges in one shared file: the
file is read, the gauges changed, and the whole file written to a temporary
file and renamed over the old one, so the collector never reads half a file.
A lock file serialises a backup-push and a wal-push finishing at the same time
(without it, one could drop the other's update).
"""

from __future__ import annotations

import fcntl
import os

# name -> (type, help). Only these are written; unknown lines in the file are dropped.
METRICS = {
    "walship_last_backup_success_timestamp_seconds": ("gauge", "End of the last successful base backup."),
    "walship_last_backup_size_bytes": ("gauge", "Data directory bytes read by the last successful base backup."),
    "walship_last_backup_stored_bytes": ("gauge", "Bytes stored in the repository by the last successful backup."),
    "walship_last_backup_duration_seconds": ("gauge", "Duration of the last successful base backup."),
    "walship_last_backup_bad_pages": ("gauge", "Pages with a wrong checksum read by the last successful backup."),
    "walship_last_backup_failure_timestamp_seconds": ("gauge", "Time of the last failed base backup."),
    "walship_backup_failures_total": ("counter", "Failed base backups since the metrics file was created."),
    "walship_last_archived_timestamp_seconds": ("gauge", "Time the last WAL file was archived."),
    "walship_last_archived_info": ("gauge", "The last WAL file archived (label segment)."),
    "walship_last_archived_bytes": ("gauge", "Bytes of WAL archived by the last successful wal-push call."),
    "walship_last_archived_duration_seconds": ("gauge", "Upload time of the last successful wal-push call."),
    "walship_last_archive_failure_timestamp_seconds": ("gauge", "Time of the last failed wal-push."),
    "walship_archive_failures_total": ("counter", "Failed wal-push calls since the metrics file was created."),
    "walship_archive_backlog_segments": ("gauge", "WAL files waiting to be archived (.ready) after the last wal-push."),
    "walship_receive_connected": ("gauge", "1 while wal-receive streams from the server, else 0."),
    "walship_receive_lag_bytes": ("gauge", "Bytes of WAL the server sent that wal-receive has not acknowledged yet."),
    "walship_receive_last_store_timestamp_seconds": ("gauge", "Time wal-receive last stored WAL in the repository."),
}


def _base(series: str) -> str:
    return series.split("{", 1)[0]


def read(path: str) -> dict[str, float]:
    """Series (name with labels) -> value, from an existing metrics file; {} if there is none."""
    values: dict[str, float] = {}
    try:
        with open(path) as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return values
    for line in lines:
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        if _base(series) in METRICS:
            try:
                values[series] = float(value)
            except ValueError:
                continue
    return values


def render(values: dict[str, float]) -> str:
    out = []
    for name, (kind, help_text) in METRICS.items():
        series = sorted(s for s in values if _base(s) == name)
        if not series:
            continue
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for s in series:
            v = values[s]
            out.append(f"{s} {int(v) if float(v).is_integer() else repr(v)}")
    return "\n".join(out) + "\n"


def update(path: str, set_values: dict[str, float], increment: tuple[str, ...] = (),
           replace: tuple[str, ...] = (), counters: tuple[str, ...] = ()) -> None:
    """Set gauges, add 1 to the `increment` counters, drop every series of the names in
    `replace` first, and make the `counters` exist (at 0) so that rate() works from the start."""
    directory = os.path.dirname(os.path.abspath(path))
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        values = {s: v for s, v in read(path).items() if _base(s) not in replace}
        values.update(set_values)
        for counter in counters:
            values.setdefault(counter, 0)
        for counter in increment:
            values[counter] = values.get(counter, 0) + 1
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
        with open(tmp, "w") as fh:
            fh.write(render(values))
        os.chmod(tmp, 0o644)   # node_exporter runs as another user
        os.replace(tmp, path)


def label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
