"""A repository opened from the environment a test gives walship (WALSHIP_REPO, the S3 endpoint, AWS keys)."""

from __future__ import annotations

from walship.config import Settings
from walship.storage import Store, open_store


def open_repo(env: dict) -> Store:
    settings = Settings(repo=env["WALSHIP_REPO"], s3_endpoint=env.get("WALSHIP_S3_ENDPOINT"),
                        s3_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
                        s3_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"), s3_region=env.get("AWS_REGION"))
    return open_store(settings.repo, settings)
