"""The manifest: one JSON line per tar member, in the order of the tar stream.

Each part has its own manifest object next to it, so that a restore checks a
part against its manifest in lockstep while it extracts it: constant memory
whatever the number of files, and parts restored in parallel.

A file's line holds its path, size, mode, mtime and SHA-256 of the bytes the
backup holds; directories and links have no size or digest, links a target.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Iterator

from walship.errors import IntegrityError


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    path: str
    type: str                  # "file", "dir" or "link"
    mode: int
    mtime: float
    size: int = 0
    sha256: str = ""
    target: str = ""

    def line(self) -> bytes:
        doc: dict = {"path": self.path, "type": self.type, "mode": self.mode, "mtime": self.mtime}
        if self.type == "file":
            doc["size"] = self.size
            doc["sha256"] = self.sha256
        if self.target:
            doc["target"] = self.target
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def parse_lines(chunks: Iterable[bytes], name: str) -> Iterator[ManifestEntry]:
    """Entries from a stream of JSON-lines chunks."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield _parse(line, name)
    if pending.strip():
        yield _parse(pending, name)


def _parse(line: bytes, name: str) -> ManifestEntry:
    try:
        doc = json.loads(line)
        return ManifestEntry(path=doc["path"], type=doc["type"], mode=int(doc["mode"]), mtime=float(doc["mtime"]),
                             size=int(doc.get("size", 0)), sha256=doc.get("sha256", ""), target=doc.get("target", ""))
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(f"{name} is corrupt: a line is not a manifest entry",
                             "the backup cannot be verified; restore another one") from None
