"""The base-backup commands: backup-push, backup-list, backup-fetch, delete."""

from __future__ import annotations

import json
import sys
import time

from walship import logs
from walship.errors import ConfigError


def run(command: str, args, settings, store_factory) -> int:
    handlers = {"backup-push": _push, "backup-list": _list, "backup-fetch": _fetch, "delete": _delete}
    store = store_factory()
    try:
        return handlers[command](args, settings, store)
    finally:
        store.close()


def _push(args, settings, store) -> int:
    from walship.backup import priority, report
    from walship.backup.push import backup_push
    from walship.repo.lock import RepositoryLock

    if args.while_offline:
        raise ConfigError("backup-push --while-offline is not supported", "start the cluster and take a hot backup")
    retain = args.retain if args.retain is not None else settings.retain
    priority.lower(settings.backup_low_priority)    # before the part workers start: each thread inherits it
    started = time.monotonic()
    try:
        # the lock keeps delete from removing WAL this backup needs while it runs; backup-push takes it
        # only once it knows the repository is its cluster's and WAL reaches it
        info = backup_push(args.pgdata, settings, store, lock=lambda: RepositoryLock(store, "backup-push"),
                           conninfo=args.pg, primary=args.primary, progress_mode=args.progress,
                           mode="incremental" if args.parent else (args.backup_mode or "auto"), from_name=args.parent)
    except BaseException as exc:
        report.after_push(settings, ok=False, error=exc, duration_s=round(time.monotonic() - started, 3))
        raise
    report.after_push(settings, ok=True, backup=info, duration_s=info.duration_s)
    if retain:                                  # the backup succeeded whatever happens here
        with RepositoryLock(store, "delete"):
            _apply_retention(store, retain, None, dry_run=False)
    return 0


def _list(args, settings, store) -> int:
    from walship.backup.catalog import list_backups

    backups = list_backups(store)
    stored = {b.name: b.stored_size for b in backups}
    chain_stored = {b.name: b.stored_size + sum(stored.get(n, 0) for n in b.chain) for b in backups}
    if args.json:
        print(json.dumps([{**b.as_dict(), "chain_depth": len(b.chain), "chain_stored_size": chain_stored[b.name]}
                          for b in backups], indent=2))
        return 0
    if not backups:
        print(f"no complete backup in {store.url}")
        return 0
    columns = ("name", "type", "parent", "depth", "start", "stop", "start_lsn", "stop_lsn", "tli", "pg", "system_id",
               "size", "stored", "chain_stored", "duration")
    rows = [(b.name, b.backup_type, b.parent or "-", str(len(b.chain)), _utc(b.start_time), _utc(b.stop_time),
             b.start_lsn, b.stop_lsn, str(b.timeline), str(b.pg_version), b.system_identifier or "-", _size(b.size),
             _size(b.stored_size), _size(chain_stored[b.name]), f"{b.duration_s:.0f}s") for b in backups]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    for row in (columns, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _fetch(args, settings, store) -> int:
    from walship.backup.fetch import backup_fetch, parse_tablespace_options
    from walship.backup.recovery import Target

    target = Target(time=args.target_time, lsn=args.target_lsn, xid=args.target_xid, name=args.target_name,
                    immediate=args.target_immediate, action=args.target_action, timeline=args.target_timeline,
                    exclusive=args.target_exclusive)
    config_path = args.config or _config_file(settings)
    backup_fetch(args.dest, args.name, settings, store, target, parse_tablespace_options(args.tablespace),
                 restore_spec=args.restore_spec, config_path=config_path, progress_mode=args.progress,
                 as_primary=args.as_primary, beyond_archive=args.target_beyond_archive)
    return 0


def _config_file(settings) -> str | None:
    """The config file the settings came from, if any (restore_command must read the same one)."""
    for origin in settings.sources.values():
        if origin.startswith("file "):
            return origin[len("file "):]
    return None


def _delete(args, settings, store) -> int:
    if args.wale_args:
        raise ConfigError(f"unexpected arguments {' '.join(args.wale_args)}",
                          "use `walship delete --retain N` or `--before NAME|TIME`")
    _refuse_foreign_cluster(store, args.pgdata, args.pg)
    if args.dry_run:
        _apply_retention(store, args.retain, args.before, dry_run=True, include_wal_e=args.include_wal_e)
        return 0
    from walship.repo.lock import RepositoryLock
    with RepositoryLock(store, "delete"):
        _apply_retention(store, args.retain, args.before, dry_run=False, include_wal_e=args.include_wal_e)
    return 0


def _refuse_foreign_cluster(store, pgdata: str | None, conninfo: str | None) -> None:
    """delete run for one cluster must not expire another cluster's repository: compare with the record."""
    import os

    from walship.errors import WalshipError
    from walship.repo import record

    owner = record.read(store)
    if owner is None:
        return
    identity = None
    pgdata = pgdata or os.environ.get("PGDATA")
    if pgdata:
        from walship.pg.walheader import read_control_identity
        control = read_control_identity(pgdata)
        if control is None:
            raise ConfigError(f"cannot read {pgdata}/global/pg_control to tell which cluster this is",
                              "pass the data directory of this host's cluster with --pgdata, readable by this user")
        identity = record.ClusterIdentity(control[0])
    else:
        from walship.pg import backup_api
        from walship.pg.conn import connect
        try:
            with connect(conninfo, application_name="walship delete", timeout_s=3) as conn:
                identity = record.ClusterIdentity(backup_api.server_facts(conn).system_identifier)
        except WalshipError:
            if conninfo:
                raise
            logs.info("cluster_unknown", "no local server and no --pgdata: the repository's owner "
                      f"({owner.system_identifier}) was not compared with this host's cluster")
    if identity is not None:
        record.check_owner(owner, identity, store, "delete")


def _apply_retention(store, retain: int | None, before: str | None, dry_run: bool,
                     include_wal_e: bool = False) -> None:
    from walship.backup import retention
    from walship.backup.catalog import open_catalog
    from walship.repo.layout import WAL_PREFIX
    from walship.repo.lock import remove_leftovers

    remove_leftovers(store, time.time(), dry_run=dry_run)
    catalog = open_catalog(store)
    plan = retention.plan(catalog, retain, before, include_wal_e)
    wal_keys = [k for k in plan.keys.get("walship", []) if k.startswith(WAL_PREFIX)]
    wale_keys = plan.keys.get("wal-e", [])
    verb = "would delete" if dry_run else "deleting"
    for backup in plan.delete:
        print(f"{verb} backup {backup.name}" + (" (WAL-E)" if backup.source == "wal-e" else ""))
    if wal_keys:
        print(f"{verb} {len(wal_keys)} WAL files ({wal_keys[0]} .. {wal_keys[-1]})")
    if wale_keys:
        print(f"{verb} {len(wale_keys)} WAL-E objects")
    if not (plan.delete or wal_keys or wale_keys):
        print("nothing to delete")
    sys.stdout.flush()
    if not dry_run:
        retention.execute(catalog, plan)
        logs.info("retention_applied", f"deleted {len(plan.delete)} backups and {len(wal_keys)} WAL files; "
                  f"kept {len(plan.keep)} backups")


def _utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _size(n: int) -> str:
    from walship.backup.progress import human_bytes
    return human_bytes(n)
