"""The end-of-archive check on S3 (moto's server over HTTP): one listing after the missing key."""

from __future__ import annotations

import pytest

from walship import pipeline
from walship.archive import fetch
from walship.config import Settings
from walship.repo.record import NotARepository
from walship.storage import open_store

X = "000000010000000000000004"


def _store(moto, bucket: str):
    env = moto.env(bucket)
    settings = Settings(repo=env["WALSHIP_REPO"], s3_endpoint=env["WALSHIP_S3_ENDPOINT"],
                        s3_access_key_id="testing", s3_secret_access_key="testing", s3_region="us-east-1")
    return open_store(settings.repo, settings)


def test_s3_lists_what_follows_a_key_in_key_order(moto):
    store = _store(moto, moto.new_bucket())
    for name in ("000000010000000000000007", "000000010000000000000003", "00000002.history", X,
                 "000000020000000000000006"):
        store.put(f"wal/{name}", b"x")
    store.put("wal_005/000000010000000000000005.lzo", b"x")
    assert [o.key for o in store.list("wal/", start_after=f"wal/{X}")] == [
        "wal/000000010000000000000007", "wal/00000002.history", "wal/000000020000000000000006"]


def test_a_gap_the_real_end_and_an_empty_bucket_on_s3(moto):
    empty = _store(moto, moto.new_bucket())
    with pytest.raises(NotARepository):
        fetch.check_end_of_archive(empty, X)

    store = _store(moto, moto.new_bucket())
    for name in ("000000010000000000000003", "000000010000000000000005"):
        store.put(f"wal/{name}", pipeline.pack(b"w", "none"))
    fetch.check_end_of_archive(store, "000000010000000000000006")
    with pytest.raises(fetch.WalGap, match="000000010000000000000005 on the same timeline"):
        fetch.check_end_of_archive(store, X)

    migrated = _store(moto, moto.new_bucket())            # WAL-E archived what follows the miss
    migrated.put("wal/000000010000000000000003", pipeline.pack(b"w", "none"))
    migrated.put("wal_005/000000010000000000000006.lzo", b"lzo")
    with pytest.raises(fetch.WalGap, match="000000010000000000000006"):
        fetch.check_end_of_archive(migrated, X)
