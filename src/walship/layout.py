"""Where things live in a repository (keys below the repository URL)."""

WAL_PREFIX = "wal/"
BACKUP_PREFIX = "backups/"


def wal_key(name: str) -> str:
    return WAL_PREFIX + name


def wal_name_of_key(key: str) -> str:
    return key[len(WAL_PREFIX):]


QUARANTINE_PREFIX = "quarantine/"


def quarantine_key(stamp: str, key: str) -> str:
    """Where `walship quarantine` sets an object aside: quarantine/<UTC time>/<its key>."""
    return f"{QUARANTINE_PREFIX}{stamp}/{key}"
