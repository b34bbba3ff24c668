"""Base backups: backup-push, backup-list, backup-fetch (PITR), retention."""
