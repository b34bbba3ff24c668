"""Recognising WAL-E's GPG-encrypted objects by content, and gpg's failures as one-line errors."""

import os
import subprocess

import pytest

from walship.errors import IntegrityError
from walship.walecompat import gpg, lzop


@pytest.fixture
def gnupg_home(tmp_path):
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    yield home
    # gpg started an agent for this home: stop it with the test
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], capture_output=True)


def gpg_symmetric(home, data: bytes, *armor: str) -> bytes:
    return subprocess.run(["gpg", "--batch", "--symmetric", "--passphrase", "pw", "--pinentry-mode", "loopback",
                           *armor], input=data, capture_output=True, check=True,
                          env={**os.environ, "GNUPGHOME": str(home)}).stdout


def test_gpg_messages_are_recognised(gnupg_home):
    assert gpg.looks_encrypted(gpg_symmetric(gnupg_home, b"segment"))
    assert gpg.looks_encrypted(gpg_symmetric(gnupg_home, b"segment", "--armor"))


def test_lzop_streams_and_other_bytes_are_not():
    assert not gpg.looks_encrypted(lzop.MAGIC + b"\x10\x40")
    assert not gpg.looks_encrypted(b"")
    assert not gpg.looks_encrypted(b"PK\x03\x04")
    assert not gpg.looks_encrypted(bytes([0xB4]))           # a packet, but a user id: no message starts so


def test_a_missing_secret_key_names_the_object_and_the_key():
    stage = gpg.decrypt_filter("WAL-E object wal_005/000000010000000000000003.lzo in s3://b/p", "0xABCDEF")
    err = stage.failure(2, "gpg: encrypted with rsa3072 key, ID 1234\ngpg: decryption failed: No secret key\n")
    assert isinstance(err, gpg.KeyUnavailable) and err.aborts_recovery
    assert err.one_line().startswith("WAL-E object wal_005/000000010000000000000003.lzo in s3://b/p is encrypted "
                                     "with GPG and its secret key is not available to this user "
                                     "(WALE_GPG_KEY_ID=0xABCDEF); import")


def test_a_damaged_message_is_an_integrity_error_with_gpgs_reason():
    err = gpg.decrypt_filter("obj", None).failure(2, "gpg: [don't know]: invalid packet (ctb=2e)\n"
                                                     "gpg: decryption failed: Invalid packet\n")
    assert isinstance(err, IntegrityError)
    assert err.one_line() == "obj could not be decrypted: gpg: decryption failed: Invalid packet"


@pytest.mark.parametrize("stderr", ["gpg: public key decryption failed: Bad passphrase",
                                    "gpg: problem with the agent: No pinentry"])
def test_a_locked_key_says_so(stderr):
    err = gpg.decrypt_filter("obj", None).failure(2, stderr)
    assert isinstance(err, gpg.KeyUnavailable) and "locked by a passphrase" in err.message


def test_the_key_named_is_the_gpg_key_id_setting_not_the_environment(tmp_path, gnupg_home, monkeypatch):
    from walship.archive.fetch import download
    from walship.config import Settings
    from walship.storage import open_store
    store = open_store(f"file://{tmp_path}/repo", Settings())
    store.put("wal_005/000000010000000000000003.lzo", gpg_symmetric(gnupg_home, b"segment"))
    monkeypatch.setenv("WALE_GPG_KEY_ID", "0xFROMENV")
    named = []
    monkeypatch.setattr(gpg, "decrypt_filter", lambda what, key_id: named.append(key_id) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        download(store, "000000010000000000000003", None, "0xSETTING")
    assert named == ["0xSETTING"]
