"""Shared fixtures: scratch directories, moto's S3 server, real PostgreSQL clusters."""

from __future__ import annotations

import os

import pytest

from tests.support import pg
from tests.support.s3 import MotoS3


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def scratch():
    path = pg.scratch_dir()
    yield path
    pg.remove_tree(path)


@pytest.fixture(scope="session")
def moto():
    server = MotoS3()
    yield server
    server.stop()


def require_version(version: int) -> None:
    """Skip the test when this PostgreSQL major is not installed; under CI=true (a set-up machine) fail it."""
    if pg.pg_bin(version) is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"PostgreSQL {version} is not installed; scripts/setup installs it")
        pytest.skip(f"PostgreSQL {version} not installed")


@pytest.fixture(params=pg.VERSIONS, ids=[f"pg{v}" for v in pg.VERSIONS])
def pg_version(request):
    """Each supported major in turn; cluster_factory skips (or in CI fails) one that is not installed."""
    return request.param


@pytest.fixture(params=["file", "s3"])
def repo_env(request, scratch, moto):
    """Environment for a fresh repository of each kind."""
    if request.param == "file":
        repo = pg.make_dir(scratch, "repo", 0o755)
        return {"WALSHIP_REPO": f"file://{repo}"}
    return moto.env(moto.new_bucket())


@pytest.fixture
def cluster_factory(scratch):
    clusters = []

    def make(version: int, name: str = "primary", env: dict | None = None, **kw) -> pg.Cluster:
        require_version(version)       # here, so a test asking for a missing version skips (or fails in CI)
        c = pg.Cluster(version, scratch, name=name, env=env, **kw)
        clusters.append(c)
        return c
    yield make
    for c in clusters:
        try:
            c.stop("immediate")
        except Exception:
            pass
