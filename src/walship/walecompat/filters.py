"""Streaming bytes through external filter programs (gpg, lzop), the way WAL-E did.

WAL-E wrote every object through `lzop -c` and, with a GPG key, `gpg -e`; the
same Debian binaries read them back fastest (no LZO wheel installs without a C
toolchain). A chain of filters runs as one pipeline: a feeder thread writes the
input chunks into the first program while the caller reads the last program's
output, so nothing is held in memory or spooled to disk.

The output is only known to be good once every program has exited 0: the
iterator checks the exit statuses after the last chunk and raises then, so a
consumer must read it to the end (see `drain`) before trusting what it wrote.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass

from walship.errors import ConfigError, WalshipError

READ_SIZE = 1 << 20


@dataclass(frozen=True)
class Filter:
    argv: list[str]
    # (exit status, the program's stderr) -> the error to raise
    failure: Callable[[int, str], WalshipError]


def require_program(program: str, package: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise ConfigError(f"reading WAL-E objects needs the {program} program, which is not installed",
                          f"apt-get install {package}")
    return path


def run(filters: list[Filter], chunks: Iterable[bytes]) -> Generator[bytes, None, None]:
    """Yield the output of `chunks` piped through every filter in turn."""
    errs = [tempfile.TemporaryFile() for _ in filters]
    procs: list[subprocess.Popen] = []
    try:
        for i, f in enumerate(filters):
            stdin = procs[-1].stdout if procs else subprocess.PIPE
            procs.append(subprocess.Popen(f.argv, stdin=stdin, stdout=subprocess.PIPE, stderr=errs[i],
                                          close_fds=True))
            if i > 0:
                previous_out = procs[i - 1].stdout
                assert previous_out is not None       # stdout=PIPE
                previous_out.close()   # only the next program holds the pipe now
        feeder = _Feeder(chunks, procs[0].stdin)
        feeder.start()
        out = procs[-1].stdout
        assert out is not None
        while True:
            block = out.read(READ_SIZE)
            if not block:
                break
            yield block
        feeder.join()
        if feeder.error is not None:
            raise feeder.error                # the store failed while streaming: that is the cause
        for f, proc, err in zip(filters, procs, errs):
            status = proc.wait()
            if status != 0:
                err.seek(0)
                raise f.failure(status, err.read().decode(errors="replace").strip())
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout and not proc.stdout.closed:
                proc.stdout.close()
        for err in errs:
            err.close()


def drain(chunks: Iterator[bytes]) -> int:
    """Read an iterator to its end (running its final checks); the number of bytes left over."""
    return sum(len(c) for c in chunks)


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return "no message"


class _Feeder(threading.Thread):
    def __init__(self, chunks: Iterable[bytes], sink):
        super().__init__(daemon=True)
        self.chunks = chunks
        self.sink = sink
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for chunk in self.chunks:
                self.sink.write(chunk)
        except BrokenPipeError:
            pass                              # the program stopped reading: its exit status says why
        except BaseException as exc:          # noqa: BLE001 - handed to the reading thread
            self.error = exc
        finally:
            try:
                self.sink.close()
            except BrokenPipeError:
                pass
