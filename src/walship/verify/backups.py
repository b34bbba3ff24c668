"""A backup read back from the repository as a restore would read it, writing nothing.

Every part is downloaded, decrypted, decompressed and walked member by member
against its manifest (size and SHA-256 of every file), by the same code a
restore uses (backup.extract.check_member); parts are checked in parallel.
An incremental backup's chain is then read as its restore would read it
(backup.incremental.ChainReader, writing nothing): each block checked against
the newest block map, the chain tiling every file.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from walship.errors import WalshipError


def check(store, backup, keyring, workers: int) -> tuple[list[str], dict]:
    """(problems, facts) of one backup."""
    if backup.source != "walship":
        return [], {"checked": False, "note": "WAL-E backup: listed from its sentinel; restore it to read it back"}
    from walship.backup import catalog
    from walship.backup.extract import verify_part
    from walship.backup.fetch import part_manifest, part_stream
    from walship.backup.manifest import SliceTracker
    from walship.repo import layout

    try:
        marker = catalog.read_marker(store, backup.name)
    except WalshipError as exc:
        return [exc.one_line()], {"checked": False}

    slices = SliceTracker()

    def one(number: int):
        what = f"{layout.part_key(backup.name, number)} in {store.url}"
        try:
            return verify_part(part_stream(store, backup.name, number, keyring),
                               part_manifest(store, backup.name, number, keyring), what, slices), None
        except WalshipError as exc:
            return (0, 0), exc.one_line()

    problems, files, total = [], 0, 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for (n_files, n_bytes), error in pool.map(one, range(marker.parts)):
            files += n_files
            total += n_bytes
            if error:
                problems.append(error)
    if not problems:
        try:
            slices.check_complete(f"backup {backup.name} in {store.url}")
        except WalshipError as exc:
            problems.append(exc.one_line())
    facts: dict = {"checked": True, "parts": marker.parts, "files": files, "bytes": total}
    if marker.info.chain and not problems:
        # the chain: every block the newest map takes from an older backup is there and has its hash,
        # and each backup supplies exactly the blocks it should (the files are tiled)
        from walship.backup.incremental import ChainReader
        try:
            ChainReader(store, marker, keyring).run(workers, problems.append)
        except WalshipError as exc:
            problems.append(exc.one_line())
        facts["chain"] = list(marker.info.chain)
    return problems, facts
