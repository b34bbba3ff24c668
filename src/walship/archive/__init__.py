"""WAL archiving: wal-push (archive_command) and wal-fetch (restore_command)."""
