"""Secrets never appear in what walship prints or logs, whatever fails."""

from __future__ import annotations

import uuid

from tests.support import pg
from tests.support.walfiles import with_header


def test_no_secret_in_errors_logs_or_config_output(scratch, moto):
    aws_secret = f"AWS-SECRET-{uuid.uuid4().hex}"
    icinga_password = f"ICINGA-SECRET-{uuid.uuid4().hex}"
    key = pg.walship(["keygen"], pg.server_env()).stdout.strip()
    env = pg.server_env({**moto.env("some-bucket", endpoint=f"http://127.0.0.1:{pg.free_port()}"),
                         "AWS_SECRET_ACCESS_KEY": aws_secret, "WALSHIP_ENCRYPTION_KEY": key,
                         "WALSHIP_ICINGA_URL": f"https://127.0.0.1:{pg.free_port()}",
                         "WALSHIP_ICINGA_USER": "walship", "WALSHIP_ICINGA_PASSWORD": icinga_password,
                         "WALSHIP_S3_MAX_RETRIES": "0", "WALSHIP_S3_RETRY_TIMEOUT": "1"})
    wal = pg.make_dir(scratch, "pg_wal", 0o755)
    (wal / "000000010000000000000001").write_bytes(with_header("000000010000000000000001", b"\1" * 65536))
    pg.chown_postgres(wal / "000000010000000000000001")
    outputs = []
    for fmt in ("text", "json"):
        r = pg.walship(["wal-push", str(wal / "000000010000000000000001")], {**env, "WALSHIP_LOG_FORMAT": fmt})
        assert r.returncode == 3            # the store is unreachable: the failure is reported ...
        outputs.append(r.stdout + r.stderr)
    r = pg.walship(["wal-fetch", "000000010000000000000001", str(scratch / "x")], env)
    outputs.append(r.stdout + r.stderr)
    for args in (["config"], ["config", "--json"]):
        r = pg.walship(args, env)
        assert r.returncode == 0 and "********" in r.stdout
        outputs.append(r.stdout + r.stderr)
    for text in outputs:                    # ... and no secret is in any of it
        for secret in (aws_secret, icinga_password, key):
            assert secret not in text
