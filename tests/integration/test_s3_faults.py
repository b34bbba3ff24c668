"""S3 faults between walship and the store: never exit 0 without the object, never a partial file."""

from __future__ import annotations

import os
import time

import pytest

from tests.support import pg
from tests.support.faultproxy import FaultProxy
from tests.support.walfiles import with_header

SEG = "000000010000000000000007"


@pytest.fixture
def proxied(moto, scratch):
    bucket = moto.new_bucket()
    proxy = FaultProxy(moto.port)
    env = pg.server_env({**moto.env(bucket, endpoint=proxy.endpoint), "WALSHIP_S3_MAX_RETRIES": "4",
                         "WALSHIP_S3_RETRY_TIMEOUT": "20", "WALSHIP_S3_REQUEST_TIMEOUT": "3",
                         "WALSHIP_FETCH_PREFETCH": "0"})
    wal = pg.make_dir(scratch, "pg_wal", 0o755)
    path = wal / SEG
    path.write_bytes(with_header(SEG, os.urandom(1 << 20) + bytes(3 << 20)))
    pg.chown_postgres(path)
    yield proxy, env, bucket, str(path)
    proxy.close()


def _stored(moto, bucket) -> bool:
    return f"pg/wal/{SEG}" in moto.keys(bucket, "pg/wal/")


@pytest.mark.parametrize("fault", ["500", "503"])
def test_push_retries_server_errors_and_throttling(proxied, moto, fault):
    proxy, env, bucket, path = proxied
    proxy.add("PUT", SEG, fault, times=2)
    r = pg.walship(["wal-push", path], env)
    assert r.returncode == 0, r.stderr
    assert [f for f in proxy.fired if f[2] == fault] and _stored(moto, bucket)


def test_push_fails_without_acknowledging_when_the_store_keeps_failing(proxied, moto):
    proxy, env, bucket, path = proxied
    proxy.add("PUT", SEG, "500", times=-1)
    r = pg.walship(["wal-push", path], env)
    assert r.returncode == 3 and "Traceback" not in r.stderr
    assert "answered HTTP 500 InternalError" in r.stderr and "nothing was acknowledged" in r.stderr
    assert not _stored(moto, bucket)


def test_response_lost_after_a_successful_upload_is_recognised_as_archived(proxied, moto):
    # the PUT reaches S3 but its answer is cut: the retry finds the same object already there
    proxy, env, bucket, path = proxied
    proxy.add("PUT", SEG, "reset", times=1)
    r = pg.walship(["wal-push", path], env)
    assert r.returncode == 0, r.stderr
    assert _stored(moto, bucket)


@pytest.mark.parametrize("fault", ["truncate", "reset", "503"])
def test_fetch_under_a_transient_fault_restores_exact_bytes_or_nothing(proxied, scratch, fault):
    proxy, env, bucket, path = proxied
    assert pg.walship(["wal-push", path], env).returncode == 0
    proxy.add("GET", SEG, fault, times=1)
    dest = scratch / "restored"
    r = pg.walship(["wal-fetch", SEG, str(dest)], env)
    if r.returncode == 0:
        assert dest.read_bytes() == open(path, "rb").read()
    else:
        assert not dest.exists() and "Traceback" not in r.stderr
    assert proxy.fired


@pytest.mark.parametrize("fault", ["truncate", "reset"])
def test_fetch_under_a_persistent_fault_fails_and_leaves_no_file(proxied, scratch, fault):
    proxy, env, bucket, path = proxied
    assert pg.walship(["wal-push", path], env).returncode == 0
    proxy.add("GET", SEG, fault, times=-1)
    dest = scratch / "restored"
    r = pg.walship(["wal-fetch", SEG, str(dest)], env)
    assert r.returncode in (3, 4), r.stderr
    assert not dest.exists()
    assert not [p for p in scratch.iterdir() if "walship-tmp" in p.name]


def test_a_stalled_store_times_out_instead_of_hanging(proxied, scratch):
    proxy, env, bucket, path = proxied
    assert pg.walship(["wal-push", path], env).returncode == 0
    proxy.add("GET", SEG, "stall", times=-1, stall_s=60)
    env = {**env, "WALSHIP_S3_REQUEST_TIMEOUT": "1", "WALSHIP_S3_RETRY_TIMEOUT": "3", "WALSHIP_S3_MAX_RETRIES": "1"}
    started = time.time()
    r = pg.walship(["wal-fetch", SEG, str(scratch / "restored")], env, timeout=60)
    assert r.returncode == 3, r.stderr
    assert "did not answer in time" in r.stderr
    assert time.time() - started < 30
    assert not (scratch / "restored").exists()


@pytest.mark.parametrize("fault", ["cut", "drop"])
def test_a_reset_during_the_upload_is_retried_and_the_segment_archived(proxied, moto, scratch, fault):
    # "cut": the connection is reset halfway through the request body; "drop": after the whole body,
    # before S3 sees it. Either way nothing landed, and one reset must not fail the archive_command.
    proxy, env, bucket, path = proxied
    proxy.add("PUT", SEG, fault, times=1)
    r = pg.walship(["wal-push", path], env)
    assert r.returncode == 0, r.stderr
    assert [f for f in proxy.fired if f[2] == fault]
    assert len([q for q in proxy.requests if q[0] == "PUT" and SEG in q[1]]) == 2     # the retry
    dest = scratch / "restored"
    assert pg.walship(["wal-fetch", SEG, str(dest)], env).returncode == 0
    assert dest.read_bytes() == open(path, "rb").read()


def test_a_retried_create_only_upload_that_finds_its_own_first_attempt_succeeds(proxied, moto):
    # the first PUT lands but its answer is lost; the retry (If-None-Match: *) is refused with 412:
    # that is the same segment, archived, not a conflict
    proxy, env, bucket, path = proxied
    proxy.add("PUT", SEG, "lost", times=1)
    r = pg.walship(["wal-push", path], env)
    assert r.returncode == 0, r.stderr
    assert "different content" not in r.stderr and _stored(moto, bucket)
    assert len([q for q in proxy.requests if q[0] == "PUT" and SEG in q[1]]) == 2


def test_an_upload_that_keeps_failing_says_what_was_tried(proxied, moto):
    proxy, env, bucket, path = proxied
    proxy.add("PUT", SEG, "cut", times=-1)
    r = pg.walship(["wal-push", path], {**env, "WALSHIP_S3_MAX_RETRIES": "2"})
    assert r.returncode == 3 and "Traceback" not in r.stderr
    assert "after 3 attempts over" in r.stderr and "nothing was acknowledged" in r.stderr
    assert not _stored(moto, bucket)
