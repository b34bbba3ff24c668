"""Migration from WAL-E: the real WAL-E 1.1.1 archives and backs up a PostgreSQL 15 cluster,
the archive_command is switched to walship, and walship restores all of it.

On PostgreSQL 15 WAL-E can only take `backup-push --while-offline` (its hot
backup calls pg_start_backup, which PostgreSQL 15 removed), so the WAL-E base
backup here is of the stopped cluster; `wal-push` works as in production.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import require_version
from tests.support import pg, wale
from tests.support.walfiles import with_header

PG15_BIN = "/usr/lib/postgresql/15/bin"


@pytest.fixture(scope="module")
def wale_bin() -> str:
    return str(wale.ensure())


@pytest.fixture(params=["file", "s3"])
def wale_env(request, scratch, moto) -> dict:
    """WAL-E's own variables only: walship must find the repository from them, unchanged."""
    if request.param == "file":
        return wale.file_env(pg.make_dir(scratch, "repo", 0o755))
    return wale.s3_env(moto, moto.new_bucket())


def _tool_env(cluster: pg.Cluster, extra: dict | None = None) -> dict:
    env = cluster.env_for_tools()
    # WAL-E runs psql, pg_config and pg_controldata, lzop and pv from PATH
    env["PATH"] = f"{PG15_BIN}:{env['PATH']}"
    env.update(extra or {})
    return env


def _wale(wale_bin: str, args: list[str], env: dict) -> subprocess.CompletedProcess:
    r = pg.run_as_postgres([wale_bin, *args], env=env, check=False, timeout=300)
    assert r.returncode == 0, f"wal-e {' '.join(args)} failed:\n{r.stderr[-3000:]}"
    return r


def _redo_segment(c: pg.Cluster) -> str:
    out = pg.run_as_postgres([str(c.bin / "pg_controldata"), str(c.datadir)], env=c.env).stdout
    return re.search(r"Latest checkpoint's REDO WAL file:\s+(\S+)", out)[1]


def _insert(c: pg.Cluster, first: int, count: int) -> str:
    c.sql("INSERT INTO t SELECT g, repeat('w', 300) FROM generate_series(%s::int, %s::int) g",
          (first, first + count - 1))
    return c.switch_wal()


def _prepare_restored(dest: Path, source: pg.Cluster, restored: pg.Cluster) -> None:
    # WAL-E never saved postgresql.conf / pg_hba.conf (Debian keeps them in /etc): bring the server's
    for conf in ("postgresql.conf", "pg_hba.conf", "pg_ident.conf"):
        shutil.copy2(source.datadir / conf, dest / conf)
        pg.chown_postgres(dest / conf)
    # the restored postgresql.auto.conf is the source's (WAL-E's archive_command, its port): override
    restored.configure(f"port = {restored.port}\nunix_socket_directories = '{restored.sockdir}'\n"
                       "archive_mode = off\n")


def test_walship_restores_a_wale_backup_and_replays_wale_then_walship_wal(wale_bin, wale_env, cluster_factory,
                                                                         scratch):
    require_version(15)
    c = cluster_factory(15, env={**wale_env, "PATH": f"{PG15_BIN}:{pg.server_env()['PATH']}"})
    c.initdb()
    c.set_archiving(command=f"{wale_bin} wal-push %p")
    c.start()
    c.sql("CREATE TABLE t (id int PRIMARY KEY, pad text)")
    c.wait_archived(_insert(c, 1, 5000))

    # the morning job: WAL-E's base backup (of the stopped cluster: the only kind it can take on PG 15)
    c.stop()
    _wale(wale_bin, ["backup-push", "--while-offline", str(c.datadir)], _tool_env(c))
    redo_segment = _redo_segment(c)
    c.start()
    c.wait_archived(_insert(c, 5001, 5000))             # archived by WAL-E after its backup

    # the switch: same environment, archive_command now runs walship
    c.configure(f"archive_command = '{pg.WALSHIP} wal-push %p'\n")
    c.sql("SELECT pg_reload_conf()")
    time.sleep(0.5)
    c.wait_archived(_insert(c, 10001, 5000))            # archived by walship
    expected = c.scalar("SELECT count(*) FROM t")
    assert expected == 15000
    # the point in time to restore to; what follows it must not come back
    target = c.scalar("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US+00')")
    time.sleep(1.1)
    c.wait_archived(_insert(c, 15001, 5000))

    env = _tool_env(c)
    listed = pg.walship(["backup-list", "--json"], env)
    assert listed.returncode == 0, listed.stderr
    backups = json.loads(listed.stdout)
    assert [b["source"] for b in backups] == ["wal-e"]
    wale_list = _wale(wale_bin, ["backup-list"], _tool_env(c)).stdout.splitlines()
    assert backups[0]["name"] == wale_list[1].split("\t")[0]   # the name WAL-E itself lists
    assert backups[0]["pg_version"] // 10000 == 15
    assert backups[0]["start_wal"] == redo_segment      # not the segment WAL-E's offline name claims

    dest = pg.make_dir(scratch, "restored")
    r = pg.walship(["backup-fetch", str(dest), "LATEST", "--target-time", target, "--target-action", "promote"],
                   env)
    assert r.returncode == 0, r.stderr
    assert backups[0]["name"] in r.stderr
    assert (dest / "PG_VERSION").read_text().strip() == "15"
    assert oct((dest / "global" / "pg_control").stat().st_mode & 0o777) == "0o600"
    assert (dest / "recovery.signal").exists()
    assert "wal-fetch" in (dest / "postgresql.auto.conf").read_text()

    restored = cluster_factory(15, name="restored", env=wale_env)
    _prepare_restored(dest, c, restored)
    c.stop()                                             # the restore must not lean on the source
    restored.start()
    restored.wait_promoted()
    assert restored.scalar("SELECT count(*) FROM t") == expected, restored.log_tail()
    assert restored.scalar("SELECT max(id) FROM t") == 15000
    # replay really crossed the switch: segments restored from WAL-E's objects, then from walship's
    replayed = set(re.findall(r'restored log file "([0-9A-F]{24})" from archive', restored.logfile.read_text()))
    by_wale, by_walship = _archived_segments(wale_env)
    assert replayed & by_wale - by_walship and replayed & by_walship - by_wale, (replayed, by_wale, by_walship)


def _archived_segments(env: dict) -> tuple[set[str], set[str]]:
    """Segment names in WAL-E's wal_005/ and in walship's wal/ of the repository env points at."""
    from walship.config import load_settings
    from walship.storage import open_store
    # in this (test) process the AWS variables are not in os.environ: hand them over as settings
    settings = load_settings({"s3_access_key_id": env.get("AWS_ACCESS_KEY_ID"),
                              "s3_secret_access_key": env.get("AWS_SECRET_ACCESS_KEY")}, env=env)
    store = open_store(settings.repo, settings)
    names = [(o.key.split("/")[0], o.key.rsplit("/", 1)[-1][:24]) for o in store.list("")]
    return ({n for d, n in names if d == "wal_005"}, {n for d, n in names if d == "wal"})


def test_walship_restores_a_hot_wale_backup_from_its_backup_label(wale_bin, scratch, cluster_factory):
    """The backups a team already has: hot ones, taken by WAL-E on PostgreSQL 14 and older (emulated, see
    tests/support/wale_hot_backup.py), whose replay starts from the backup_label in the tar."""
    require_version(15)
    env = wale.file_env(pg.make_dir(scratch, "repo", 0o755))
    c = cluster_factory(15, env={**env, "PATH": f"{PG15_BIN}:{pg.server_env()['PATH']}"})
    c.initdb()
    c.set_archiving(command=f"{wale_bin} wal-push %p")
    c.start()
    c.sql("CREATE TABLE t (id int PRIMARY KEY, pad text)")
    c.wait_archived(_insert(c, 1, 5000))
    driver = Path(__file__).parents[1] / "support" / "wale_hot_backup.py"
    r = pg.run_as_postgres([str(wale.VENV / "bin" / "python"), "-c", driver.read_text(), str(c.datadir)],
                           env=_tool_env(c), check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (c.datadir / "backup_label").exists()
    c.wait_archived(_insert(c, 5001, 5000))             # archived by WAL-E
    c.configure(f"archive_command = '{pg.WALSHIP} wal-push %p'\n")
    c.sql("SELECT pg_reload_conf()")
    time.sleep(0.5)
    c.wait_archived(_insert(c, 10001, 5000))            # archived by walship

    listed = pg.walship(["backup-list", "--json"], _tool_env(c))
    [backup] = json.loads(listed.stdout)
    start = backup["name"][5:29]
    assert backup["start_wal"] == start                 # a hot name is exact
    assert backup["start_lsn"].split("/")[0] == "0" and backup["stop_wal"] >= start

    dest = pg.make_dir(scratch, "restored")
    r = pg.walship(["backup-fetch", str(dest), backup["name"]], _tool_env(c))
    assert r.returncode == 0, r.stderr
    label = (dest / "backup_label").read_text()
    assert f"(file {start})" in label
    restored = cluster_factory(15, name="restored", env=env)
    _prepare_restored(dest, c, restored)
    c.stop()
    restored.start()
    restored.wait_promoted()
    assert restored.scalar("SELECT count(*) FROM t") == 15000, restored.log_tail()
    # PostgreSQL started from the label (and renames it once the backup's end was replayed)
    assert (dest / "backup_label.old").exists() and not (dest / "backup_label").exists()


def test_retention_keeps_wale_objects_unless_told_and_then_expires_them(wale_bin, scratch, cluster_factory):
    require_version(15)
    repo = pg.make_dir(scratch, "repo", 0o755)
    env = wale.file_env(repo)
    c = cluster_factory(15, env={**env, "PATH": f"{PG15_BIN}:{pg.server_env()['PATH']}"})
    c.initdb()
    c.set_archiving(command=f"{wale_bin} wal-push %p")
    c.start()
    c.sql("CREATE TABLE t (id int PRIMARY KEY, pad text)")
    c.stop()
    _wale(wale_bin, ["backup-push", "--while-offline", str(c.datadir)], _tool_env(c))
    c.start()
    c.wait_archived(_insert(c, 1, 5000))
    c.configure(f"archive_command = '{pg.WALSHIP} wal-push %p'\n")
    c.sql("SELECT pg_reload_conf()")
    time.sleep(0.5)
    c.wait_archived(_insert(c, 5001, 5000))
    r = pg.walship(["backup-push", str(c.datadir)], _tool_env(c))
    assert r.returncode == 0, r.stderr
    c.wait_archived(_insert(c, 10001, 5000))

    def left() -> list[str]:
        return sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()
                      and p.relative_to(repo).parts[0] in ("wal_005", "basebackups_005"))
    wale_objects = left()

    both = json.loads(pg.walship(["backup-list", "--json"], _tool_env(c)).stdout)
    assert [b["source"] for b in both] == ["wal-e", "walship"]         # side by side, oldest first
    text = pg.walship(["backup-list"], _tool_env(c)).stdout
    assert both[0]["name"] in text and both[1]["name"] in text
    # walship's own spelling counts walship's backups only: nothing of WAL-E's goes
    r = pg.walship(["delete", "--retain", "1"], _tool_env(c))
    assert r.returncode == 0, r.stderr
    assert left() == wale_objects
    # WAL-E's spelling without --confirm is a dry run, as with WAL-E
    r = pg.walship(["delete", "retain", "1"], _tool_env(c))
    assert r.returncode == 0, r.stderr
    assert "would delete backup base_" in r.stdout and left() == wale_objects
    # with --confirm the WAL-E backup and WAL-E's WAL before the walship backup go
    r = pg.walship(["delete", "--confirm", "retain", "1"], _tool_env(c))
    assert r.returncode == 0, r.stderr
    assert not any(k.startswith("basebackups_005/") for k in left())
    listed = json.loads(pg.walship(["backup-list", "--json"], _tool_env(c)).stdout)
    assert [b["source"] for b in listed] == ["walship"]
    kept_wal = [k for k in left() if k.startswith("wal_005/") and not k.endswith(".history.lzo")]
    assert all(k[len("wal_005/") + 8:len("wal_005/") + 24] >= listed[0]["start_wal"][8:] for k in kept_wal)
    assert len(left()) < len(wale_objects)


def test_corrupt_and_truncated_wale_segments_fail_naming_the_object(wale_bin, scratch):
    repo = pg.make_dir(scratch, "repo", 0o755)
    env = pg.server_env(wale.file_env(repo))
    name = _push_fake_segment(wale_bin, scratch, env)
    key = repo / "wal_005" / f"{name}.lzo"
    good = key.read_bytes()

    out = scratch / "fetched"
    r = pg.walship(["wal-fetch", "--prefetch", "0", name, str(out)], env)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == (scratch / "pg_wal" / name).read_bytes()

    for label, damaged in (("corrupt", good[:len(good) // 2] + bytes([good[len(good) // 2] ^ 0x55])
                            + good[len(good) // 2 + 1:]),
                           ("truncated", good[:len(good) - 100])):
        key.write_bytes(damaged)
        target = scratch / f"fetched-{label}"
        r = pg.walship(["wal-fetch", "--prefetch", "0", name, str(target)], env)
        assert r.returncode == 4, (label, r.returncode, r.stderr)
        assert f"wal_005/{name}.lzo" in r.stderr, r.stderr
        assert not target.exists()
    # as restore_command in archive recovery: stop the server rather than end recovery at a damaged file
    in_recovery = pg.make_dir(scratch, "datadir-in-recovery")
    (in_recovery / "recovery.signal").touch()
    r = pg.walship(["wal-fetch", "--prefetch", "0", name, str(in_recovery / "RECOVERYXLOG")], env, cwd=str(in_recovery))
    assert r.returncode == 126, r.stderr


def test_wale_history_files_are_served_too(wale_bin, scratch):
    repo = pg.make_dir(scratch, "repo", 0o755)
    env = pg.server_env(wale.file_env(repo))
    wal_dir = pg.make_dir(scratch, "pg_wal")
    pg.make_dir(wal_dir, "archive_status")
    history = wal_dir / "00000002.history"
    history.write_text("1\t0/3000000\tno recovery target specified\n")
    pg.chown_postgres(history)
    _wale(wale_bin, ["wal-push", str(history)], env)
    assert (repo / "wal_005" / "00000002.history.lzo").exists()
    r = pg.walship(["wal-fetch", "00000002.history", str(scratch / "fetched.history")], env)
    assert r.returncode == 0, r.stderr
    assert (scratch / "fetched.history").read_bytes() == history.read_bytes()


@pytest.fixture
def gpg_home_with_key(scratch):
    """A keyring (of the postgres user) holding a passphrase-less key, like a WAL-E host's."""
    home = pg.make_dir(scratch, "gnupg-with-key")
    r = pg.run_as_postgres(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "wal-e@example.invalid",
                            "default", "default", "never"], env=pg.server_env({"GNUPGHOME": str(home)}),
                           check=False, timeout=120)
    assert r.returncode == 0, r.stderr
    yield home
    pg.run_as_postgres(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)


def test_gpg_encrypted_wale_segment_needs_the_key_and_the_message_names_the_object(wale_bin, scratch,
                                                                                  gpg_home_with_key):
    repo = pg.make_dir(scratch, "repo", 0o755)
    without_key = pg.make_dir(scratch, "gnupg-empty")
    base_env = pg.server_env(wale.file_env(repo))
    with_key = gpg_home_with_key
    pushed_env = {**base_env, "GNUPGHOME": str(with_key), "WALE_GPG_KEY_ID": "wal-e@example.invalid"}
    name = _push_fake_segment(wale_bin, scratch, pushed_env)
    stored = (repo / "wal_005" / f"{name}.lzo").read_bytes()
    assert not stored.startswith(b"\x89LZO"), "WAL-E did not encrypt the segment"

    r = pg.walship(["wal-fetch", "--prefetch", "0", name, str(scratch / "ok")], pushed_env)
    assert r.returncode == 0, r.stderr
    assert (scratch / "ok").read_bytes() == (scratch / "pg_wal" / name).read_bytes()

    r = pg.walship(["wal-fetch", "--prefetch", "0", name, str(scratch / "nokey")],
                   {**pushed_env, "GNUPGHOME": str(without_key)})
    assert r.returncode != 0
    assert f"wal_005/{name}.lzo" in r.stderr and "secret key is not available" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (scratch / "nokey").exists()


def test_gpg_encrypted_wale_base_backup_restores_with_the_key_only(wale_bin, scratch, cluster_factory,
                                                                   gpg_home_with_key):
    require_version(15)
    repo = pg.make_dir(scratch, "repo", 0o755)
    c = cluster_factory(15, env=wale.file_env(repo))
    c.initdb()
    env = _tool_env(c, {"GNUPGHOME": str(gpg_home_with_key), "WALE_GPG_KEY_ID": "wal-e@example.invalid"})
    _wale(wale_bin, ["backup-push", "--while-offline", str(c.datadir)], env)
    [part] = list(repo.glob("basebackups_005/base_*/tar_partitions/part_*.tar.lzo"))
    assert not part.read_bytes().startswith(b"\x89LZO"), "WAL-E did not encrypt the partition"

    r = pg.walship(["backup-fetch", str(pg.make_dir(scratch, "no-key")), "LATEST"],
                   {**env, "GNUPGHOME": str(pg.make_dir(scratch, "gnupg-empty"))})
    assert r.returncode != 0
    assert f"tar_partitions/{part.name}" in r.stderr and "secret key is not available" in r.stderr, r.stderr

    dest = pg.make_dir(scratch, "restored")
    r = pg.walship(["backup-fetch", str(dest), "LATEST"], env)
    assert r.returncode == 0, r.stderr
    assert (dest / "global" / "pg_control").read_bytes() == (c.datadir / "global" / "pg_control").read_bytes()


def test_a_corrupt_wale_base_backup_partition_fails_naming_it(wale_bin, scratch, cluster_factory):
    require_version(15)
    repo = pg.make_dir(scratch, "repo", 0o755)
    c = cluster_factory(15, env=wale.file_env(repo))
    c.initdb()
    _wale(wale_bin, ["backup-push", "--while-offline", str(c.datadir)], _tool_env(c))
    [part] = list(repo.glob("basebackups_005/base_*/tar_partitions/part_*.tar.lzo"))
    data = bytearray(part.read_bytes())
    data[len(data) // 3] ^= 0xFF
    part.write_bytes(bytes(data))

    r = pg.walship(["backup-fetch", str(pg.make_dir(scratch, "restored")), "LATEST"], _tool_env(c))
    assert r.returncode == 4, r.stderr
    assert f"tar_partitions/{part.name}" in r.stderr and "is corrupt or truncated" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def _push_fake_segment(wale_bin: str, scratch: Path, env: dict) -> str:
    """A 16 MiB file under a WAL segment name, pushed by WAL-E (it needs archive_status/ beside it)."""
    wal_dir = pg.make_dir(scratch, "pg_wal")
    pg.make_dir(wal_dir, "archive_status")
    name = "000000010000000000000007"
    segment = wal_dir / name
    with open(segment, "wb") as fh:
        # incompressible, then very compressible like a real segment's tail, under the long page header
        # wal-fetch checks before it serves a segment
        fh.write(with_header(name, os.urandom(1 << 20) + b"\0" * (15 << 20)))
    pg.chown_postgres(segment)
    _wale(wale_bin, ["wal-push", str(segment)], env)
    return name
