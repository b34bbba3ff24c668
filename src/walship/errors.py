"""Errors that walship reports to the operator as one line, without a traceback.

Every expected failure is a WalshipError carrying the message (what is wrong)
and a hint (what to do). The exit code says which kind of failure it was; the
codes are documented in `walship --help` and the README.
"""

EXIT_OK = 0
EXIT_FAILURE = 1        # the operation failed (for archive_command: PostgreSQL will retry)
EXIT_USAGE = 2          # bad command line or configuration
EXIT_STORE = 3          # the repository could not be reached or refused access
EXIT_INTEGRITY = 4      # corrupt object, checksum mismatch, conflicting archived content
EXIT_NOT_FOUND = 1      # wal-fetch: the file is not in the archive (normal at end of recovery)
# restore_command exit status above 125 makes PostgreSQL abort recovery instead of
# treating the file as missing (and ending recovery early at the wrong point).
EXIT_ABORT_RECOVERY = 126


class WalshipError(Exception):
    exit_code = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message

    def __str__(self) -> str:
        return self.one_line()


class ConfigError(WalshipError):
    exit_code = EXIT_USAGE


class StoreError(WalshipError):
    """The repository is unreachable, refused access, or answered an error."""
    exit_code = EXIT_STORE


class IntegrityError(WalshipError):
    """Stored data does not match what it must be (corruption, conflict)."""
    exit_code = EXIT_INTEGRITY


class NotInArchive(WalshipError):
    exit_code = EXIT_NOT_FOUND


class PostgresError(WalshipError):
    exit_code = EXIT_FAILURE
