import os

import pytest

from walship import codec, crypto, pipeline
from walship.config import Settings
from walship.errors import ConfigError, IntegrityError


def ring(*keys):
    return crypto.Keyring([k or os.urandom(32) for k in keys])


def test_encrypted_object_round_trip_and_no_plaintext_inside():
    keyring = ring(None)
    data = b"SECRET-MARKER-1234 " * 5000
    blob = pipeline.pack(data, "none", keyring=keyring, name="x")
    assert b"SECRET-MARKER" not in blob
    assert pipeline.unpack(blob, "x", keyring) == data


@pytest.mark.parametrize("where", [40, -5, -200])
def test_tampering_anywhere_is_detected(where):
    keyring = ring(None)
    blob = bytearray(pipeline.pack(os.urandom(100000), "zstd", keyring=keyring, name="x"))
    blob[where] ^= 1
    with pytest.raises(IntegrityError):
        pipeline.unpack(bytes(blob), "wal/x", keyring)


def test_truncation_is_detected():
    keyring = ring(None)
    blob = pipeline.pack(os.urandom(600000), "none", keyring=keyring)
    # cut at a record boundary too: the missing final tag gives it away
    for cut in (len(blob) - 1, len(blob) - 300000):
        with pytest.raises(IntegrityError, match="truncated|failed authentication|corrupt"):
            pipeline.unpack(blob[:cut], "wal/x", keyring)


def test_wrong_or_missing_key_is_a_clear_error_never_garbage():
    blob = pipeline.pack(b"data" * 100, "zstd", keyring=ring(None))
    with pytest.raises(IntegrityError, match="encrypted with key .* not among the configured keys"):
        pipeline.unpack(blob, "wal/x", ring(None))
    with pytest.raises(IntegrityError, match="encrypted .* no encryption key is configured"):
        pipeline.unpack(blob, "wal/x", None)


def test_rotation_old_objects_open_with_the_old_key_new_ones_use_the_new_key():
    old, new = os.urandom(32), os.urandom(32)
    blob_old = pipeline.pack(b"old" * 100, "lz4", keyring=crypto.Keyring([old]))
    rotated = crypto.Keyring([new, old])
    blob_new = pipeline.pack(b"new" * 100, "lz4", keyring=rotated)
    assert pipeline.unpack(blob_old, "a", rotated) == b"old" * 100
    assert codec.parse_header(blob_new)[0]["enc"]["kid"] == crypto.key_id(new)


def test_streams_are_encrypted_in_records_and_verified():
    keyring = ring(None)
    data = os.urandom(700000)
    encoded = b"".join(pipeline.write([data[i:i + 50000] for i in range(0, len(data), 50000)], "zstd",
                                      keyring=keyring, part=1))
    meta, plain = pipeline.read([encoded[i:i + 4096] for i in range(0, len(encoded), 4096)], "p", keyring)
    assert meta["part"] == 1 and b"".join(plain) == data


def test_key_sources(tmp_path):
    key = crypto.generate_key()
    path = tmp_path / "keys"
    path.write_text(f"# current\n{key}\n")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        crypto.keyring_from_settings(Settings(encryption_key_file=str(path)))
    os.chmod(path, 0o600)
    assert crypto.keyring_from_settings(Settings(encryption_key_file=str(path))).current_id == \
        crypto.key_id(__import__("base64").b64decode(key))
    assert crypto.keyring_from_settings(Settings(encryption_key_command=f"cat {path}")).current_id
    with pytest.raises(ConfigError, match="command failed"):
        crypto.keyring_from_settings(Settings(encryption_key_command="echo oops >&2; exit 3"))
    with pytest.raises(ConfigError, match="not 32"):
        crypto.keyring_from_settings(Settings(encryption_key="c2hvcnQ="))
    assert crypto.keyring_from_settings(Settings()) is None


def test_an_archive_wal_e_encrypted_is_never_continued_in_clear():
    with pytest.raises(ConfigError, match="WALE_GPG_KEY_ID is set"):
        crypto.keyring_for_writing(Settings(gpg_key_id="ABCD1234"))
    both = Settings(gpg_key_id="ABCD1234", encryption_key=crypto.generate_key())
    assert crypto.keyring_for_writing(both) is not None
