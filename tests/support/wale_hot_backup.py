"""WAL-E 1.1.1's hot `backup-push`, run by WAL-E's own Python, on PostgreSQL 15+.

Run as `<wal-e venv>/bin/python wale_hot_backup.py PGDATA` by the postgres user,
with WAL-E's environment and libpq variables. This is the kind of backup a
team's bucket is full of (taken on PostgreSQL 14 and older), which WAL-E can no
longer take: PostgreSQL 15 removed the exclusive pg_start_backup() /
pg_stop_backup() that WAL-E calls through two separate psql runs.

Everything is WAL-E's code (argument parsing, partitioning, tar, lzop, upload,
sentinel), except those two statements: here they are pg_backup_start() and
pg_backup_stop() in one psql session held open across the upload, and the
backup_label that exclusive mode used to write into PGDATA (where WAL-E's tar
picked it up) is written there at the start and removed at the end. The label
is checked against the one pg_backup_stop() returns: a difference fails the run.
"""

import os
import subprocess
import sys
import time

import wal_e.cmd  # noqa: E402 - applies WAL-E's gevent patches first
from wal_e.worker.pg.psql_worker import PgBackupStatements

PGDATA = os.path.abspath(sys.argv[1])
LABEL_PATH = os.path.join(PGDATA, "backup_label")
_END = "__wale_hot_backup_end__"


class Session:
    """One psql session: the non-exclusive backup must start and stop in the same one."""

    def __init__(self):
        self.proc = subprocess.Popen(["psql", "-X", "-q", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1",
                                      "-d", "postgres"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def query(self, sql):
        self.proc.stdin.write(sql.rstrip(";") + ";\n\\echo " + _END + "\n")
        self.proc.stdin.flush()
        rows = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit(f"psql ended during: {sql}")
            if line.rstrip("\n") == _END:
                return rows
            rows.append(line.rstrip("\n"))


session = Session()
label = "freeze_start_" + time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())


def run_start_backup(cls=None):
    [lsn] = session.query(f"SELECT pg_backup_start('{label}', true)")
    [row] = session.query(
        f"SELECT f.file_name, lpad(f.file_offset::text, 8, '0'), c.checkpoint_lsn, c.timeline_id, "
        f"to_char(now(), 'YYYY-MM-DD HH24:MI:SS TZ') "
        f"FROM pg_walfile_name_offset('{lsn}') f, pg_control_checkpoint() c")
    file_name, file_offset, checkpoint, timeline, started = row.split("|")
    # what PostgreSQL 14's exclusive pg_start_backup() wrote into PGDATA
    with open(LABEL_PATH, "w") as fh:
        fh.write(f"START WAL LOCATION: {lsn} (file {file_name})\n"
                 f"CHECKPOINT LOCATION: {checkpoint}\n"
                 "BACKUP METHOD: streamed\n"
                 "BACKUP FROM: primary\n"
                 f"START TIME: {started}\n"
                 f"LABEL: {label}\n"
                 f"START TIMELINE: {timeline}\n")
    return {"file_name": file_name, "file_offset": file_offset}


def run_stop_backup(cls=None):
    rows = session.query("SELECT f.file_name || '|' || lpad(f.file_offset::text, 8, '0') || '|' || "
                         "replace(s.labelfile, E'\\n', '~') "
                         "FROM pg_backup_stop(true) s, pg_walfile_name_offset(s.lsn) f")
    file_name, file_offset, labelfile = rows[0].split("|", 2)
    with open(LABEL_PATH) as fh:
        written = fh.read()
    os.unlink(LABEL_PATH)
    essential = ("START WAL LOCATION", "CHECKPOINT LOCATION", "BACKUP FROM", "START TIMELINE")
    want = [ln for ln in labelfile.split("~") if ln.startswith(essential)]
    got = [ln for ln in written.splitlines() if ln.startswith(essential)]
    if want != got:
        raise SystemExit(f"emulated backup_label differs from PostgreSQL's:\n{got}\n{want}")
    return {"file_name": file_name, "file_offset": file_offset}


PgBackupStatements.run_start_backup = classmethod(run_start_backup)
PgBackupStatements.run_stop_backup = classmethod(run_stop_backup)
sys.argv = ["wal-e", "backup-push", PGDATA]
sys.exit(wal_e.cmd.main())
