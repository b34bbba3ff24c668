"""WAL-E command lines, rewritten into walship's before parsing (docs/migrating-from-wal-e.md).

WAL-E puts its global options before the command (`wal-e --terse --s3-prefix
s3://b/p wal-push %p`), uses `-p` for --pool-size or --prefetch depending on the
command, and spells retention as sub-commands (`delete --confirm retain 7`,
`delete before base_...`). Without --confirm, WAL-E's delete only reports what
it would delete, so the rewritten command keeps that dry run. A WAL-E-style
delete counts WAL-E's backups with walship's (`--include-wal-e`): the job that
ran `wal-e delete --confirm retain 7` means "keep the newest 7 backups".

This module is on the command-line path of every call: pure string work, importing only config (loaded
on every path anyway), where the file://localhost/ rule of WALE_FILE_PREFIX lives too.
"""

from __future__ import annotations

from walship.config import wale_file_prefix_to_repo


class UnsupportedOption(Exception):
    """A WAL-E option walship deliberately does not take; the message says why and what instead."""


# WAL-E global options with a value -> walship option (None: rewritten by a function below)
_GLOBAL_WITH_VALUE = {
    "--s3-prefix": "--repo",
    "--file-prefix": "--repo",           # its value is rewritten as a file:// URL
    "--gpg-key-id": "--gpg-key-id",
}
_GLOBAL_FLAGS = {"--terse", "--aws-instance-profile"}
_UNSUPPORTED = {
    "-k": "AWS keys on the command line are visible to every user in ps: set AWS_ACCESS_KEY_ID and "
          "AWS_SECRET_ACCESS_KEY in the environment (envdir) instead",
    "--aws-access-key-id": "AWS keys on the command line are visible to every user in ps: set "
                           "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment (envdir) instead",
    "--wabs-prefix": "walship stores only in S3 or a filesystem",
    "--gs-prefix": "walship stores only in S3 or a filesystem",
    "-a": "walship stores only in S3 or a filesystem (no Azure account)",
    "--wabs-account-name": "walship stores only in S3 or a filesystem",
    "--gs-access-key-id": "walship stores only in S3 or a filesystem",
}
# what WAL-E's short -p means, per command
_SHORT_P = {"wal-push": "--pool-size", "wal-fetch": "--prefetch", "backup-push": "--pool-size",
            "backup-fetch": "--pool-size"}
_COMMANDS = {"wal-push", "wal-fetch", "wal-prefetch", "backup-push", "backup-fetch", "backup-list",
             "delete", "version"}
# WAL-E options walship accepts and ignores, with a note
_IGNORED: dict[str, str] = {}
# WAL-E options walship spells otherwise, per command (same value: WAL-E's rate is bytes/s, a plain --max-rate too)
_RENAMED = {("backup-push", "--cluster-read-rate-limit"): "--max-rate"}


def translate(argv: list[str]) -> tuple[list[str], list[str]]:
    """(walship argv, notices to print) for a WAL-E-style argv; walship's own command lines pass unchanged."""
    notices: list[str] = []
    moved: list[str] = []
    i = 0
    # 1. WAL-E's global options, before the command, move behind it
    while i < len(argv) and argv[i].startswith("-") and argv[i] not in ("-h", "--help", "--version"):
        option, eq, inline = argv[i].partition("=")
        if option in _UNSUPPORTED:
            raise UnsupportedOption(f"WAL-E option {option} is not supported: {_UNSUPPORTED[option]}")
        if option in _GLOBAL_FLAGS:
            moved.append(option)
            i += 1
            continue
        if option in _GLOBAL_WITH_VALUE:
            if eq:
                value, i = inline, i + 1
            elif i + 1 < len(argv):
                value, i = argv[i + 1], i + 2
            else:
                raise UnsupportedOption(f"WAL-E option {option} needs a value")
            if option == "--file-prefix":
                moved += ["--repo", wale_file_prefix_to_repo(value)]
            else:
                moved += [_GLOBAL_WITH_VALUE[option], value]
            continue
        break                                  # a walship option: leave the command line to argparse
    if i >= len(argv) or argv[i] not in _COMMANDS:
        return argv, notices                   # not a command line walship knows: argparse will say so
    command, rest = argv[i], argv[i + 1:]
    # 2. the command's own WAL-E spellings
    out: list[str] = []
    j = 0
    while j < len(rest):
        arg = rest[j]
        option = arg.partition("=")[0]
        if arg == "-p" and command in _SHORT_P:
            out.append(_SHORT_P[command])
        elif arg == "-n" and command == "delete":
            out.append("--dry-run")
        elif (command, option) in _RENAMED:
            out.append(_RENAMED[command, option] + arg[len(option):])     # keeps an =VALUE
        elif option in _IGNORED:
            notices.append(f"ignoring WAL-E option {option}: {_IGNORED[option]}")
            if "=" not in arg:
                j += 1                         # its value
        else:
            out.append(arg)
        j += 1
    if command == "delete":
        out = _delete(out)
    return [command, *moved, *out], notices


def _delete(args: list[str]) -> list[str]:
    """delete [--dry-run] [--confirm] retain N | before NAME | everything | old-versions."""
    positional = [a for a in args if not a.startswith("-")]
    options = [a for a in args if a.startswith("-")]
    if not positional:
        return args
    verb, operands = positional[0], positional[1:]
    if verb == "retain" and len(operands) == 1:
        new = ["--retain", operands[0]]
    elif verb == "before" and len(operands) == 1:
        new = ["--before", operands[0]]
    elif verb == "everything":
        raise UnsupportedOption("WAL-E's `delete everything` is not supported: walship never deletes a whole "
                                "repository; remove the bucket prefix with the storage's own tools")
    elif verb == "old-versions":
        raise UnsupportedOption("WAL-E's `delete old-versions` is not needed: walship reads WAL-E's current "
                                "layout (version 005) and there is nothing older to delete")
    else:
        return args
    if "--confirm" not in options and "--dry-run" not in options:
        options.append("--dry-run")            # WAL-E deletes only with --confirm
    if "--include-wal-e" not in options:
        options.append("--include-wal-e")
    return [*options, *new]
