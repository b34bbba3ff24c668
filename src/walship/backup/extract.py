"""Extracting tar parts into a destination, each member checked against the manifest.

Where and how members are written (safe paths, exclusive creates, slices of
large files, deferred directory modes, durability) is the restore writer's:
walship/restorefs.py, which WAL-E restores use too.

Every member must be the next line of the part's manifest (same path and
type); a file's size and SHA-256 are computed while it is written and must
equal the manifest's. The slices of a file larger than a part arrive in
several parts, possibly at once: `finish` refuses the restore unless they tile
the file exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

from walship import pipeline
from walship.backup.manifest import ManifestEntry, SliceTracker
from walship.backup.tarreader import Member, TarFormatError, TarReader
from walship.errors import IntegrityError
from walship.restorefs import RestoreWriter, safe_relative


def check_member(member: Member, expected: ManifestEntry | None, what: str) -> tuple[str, ManifestEntry]:
    """(name, entry) of a member that is safe and is the manifest's next entry; IntegrityError otherwise."""
    name = safe_relative(member.name, what)
    if member.kind not in ("file", "dir", "link"):
        raise IntegrityError(f"{what} holds {name!r}, which is not a file, directory or tablespace link",
                             "refusing to extract: the backup is corrupt or was tampered with")
    if expected is None or expected.path != name or expected.type != member.kind:
        raise IntegrityError(f"{what}: member {name!r} does not match its manifest "
                             f"(expected {expected.path if expected else 'the end of the part'!r})",
                             "the backup is corrupt; restore another one")
    return name, expected


def walk_part(chunks: Iterable[bytes], manifest: Iterator[ManifestEntry], what: str, handle) -> None:
    """Call handle(reader, member, expected) for every member of a part, in step with its manifest.

    A malformed or truncated tar stream (also one met while handle reads a member's
    content) and a manifest entry left over at the end are IntegrityErrors naming the part.
    """
    reader = TarReader(chunks)
    try:
        for member in reader.members():
            handle(reader, member, next(manifest, None))
    except TarFormatError as exc:
        raise IntegrityError(f"{what} is not a valid tar stream: {exc}",
                             "the backup is corrupt; restore another one") from None
    extra = next(manifest, None)
    if extra is not None:
        raise IntegrityError(f"{what} lacks {extra.path}, listed in its manifest",
                             "the backup is corrupt; restore another one")


def _check_content(digest, size: int, expected: ManifestEntry, name: str, what: str) -> None:
    if size != expected.size or digest.hexdigest() != expected.sha256:
        where = f" (slice at {expected.offset})" if expected.offset is not None else ""
        raise IntegrityError(f"{what}: {name}{where} does not match the manifest (size or SHA-256)",
                             "the backup is corrupt; restore another one")


def verify_part(chunks: Iterable[bytes], manifest: Iterator[ManifestEntry], what: str,
                slices: SliceTracker) -> tuple[int, int]:
    """Read a part as a restore would, writing nothing: (files, bytes) that match the manifest.
    Slices of large files go to `slices`, whose check_complete the caller runs once all parts are read."""
    counts = [0, 0]

    def check(reader: TarReader, member: Member, listed: ManifestEntry | None) -> None:
        name, expected = check_member(member, listed, what)
        if member.kind != "file":
            return
        if expected.offset is not None:
            slices.add(expected, what)
        digest, size = hashlib.sha256(), pipeline.Tally()
        for _ in pipeline.count(pipeline.hashed(reader.data(), digest), size.add):
            pass
        _check_content(digest, size.total, expected, name, what)
        counts[0] += expected.starts_file
        counts[1] += size.total

    walk_part(chunks, manifest, what, check)
    return counts[0], counts[1]


class Destination:
    """One restore target; parts may be extracted into it from several threads."""

    def __init__(self, dest: str, tablespace_links: Iterable[str]):
        self.writer = RestoreWriter(dest, tablespace_links)     # "pg_tblspc/<oid>", made beforehand
        self.slices = SliceTracker()

    def extract_part(self, chunks: Iterable[bytes], manifest: Iterator[ManifestEntry], what: str,
                     progress=None) -> None:
        walk_part(chunks, manifest, what,
                  lambda reader, member, expected: self.member(reader, member, expected, what, progress))

    def member(self, reader: TarReader, member: Member, listed: ManifestEntry | None, what: str,
               progress) -> None:
        """Write one member (checked against its manifest line) into the destination."""
        name, expected = check_member(member, listed, what)
        if member.kind == "link":
            if name not in self.writer.tablespace_links:
                raise IntegrityError(f"{what} holds a symbolic link {name!r} that is not a tablespace of this restore",
                                     "refusing to extract: the backup is corrupt or was tampered with")
            return                                   # made beforehand, where the operator wants it
        if member.kind == "dir":
            self.writer.mkdir(name, member.mode, None, what)
            return
        digest = hashlib.sha256()
        pieces = pipeline.hashed(reader.data(), digest)
        advance = progress.advance if progress else None
        if expected.offset is not None:
            self.slices.add(expected, what)
            size = self.writer.write_slice(name, pieces, expected.offset, expected.file_size, member.mode,
                                           member.mtime, what, advance)
        else:
            size = self.writer.write_file(name, pieces, member.mode, member.mtime, what, advance)
        _check_content(digest, size, expected, name, what)

    def finish(self, what: str) -> None:
        """Refuse the restore unless every sliced file is whole; then make it durable (RestoreWriter.finish)."""
        self.slices.check_complete(what)
        self.writer.finish()
