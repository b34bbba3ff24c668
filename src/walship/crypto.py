"""Client-side encryption: libsodium's secretstream XChaCha20-Poly1305, through PyNaCl.

No home-made cryptography: secretstream is an authenticated, chunked stream
construction (per-message authentication, ordering, and an explicit final
tag, so truncation, reordering and tampering are all detected). walship only
frames its messages: the payload of an encrypted object is the 24-byte
secretstream header, then records of (u32 big-endian length, ciphertext).
The object's own header (codec, size, SHA-256, key id) is the additional data
of the first message, so it cannot be altered either.

Keys are 32 random bytes, written in base64 (`walship keygen`). A key ring
holds the current key (first) and older ones, from WALSHIP_ENCRYPTION_KEY, a
key file (one key per line, mode 0600) or a command that prints them (for KMS
and secret managers). Every object records the id of the key that sealed it,
so keys can be rotated: new objects use the first key, old ones still open.
"""

from __future__ import annotations

import os
import struct

from walship.errors import ConfigError, IntegrityError

TYPE_CHECKING = False          # collections.abc costs restore_command's cold miss 1.4 ms: annotations only
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

ALGORITHM = "secretstream-xchacha20poly1305"
KEY_BYTES = 32
MESSAGE_BYTES = 256 * 1024
_LEN = struct.Struct(">I")


# base64 and hashlib (with re and OpenSSL behind them) are imported where a key is read: a restore_command of
# an unencrypted repository imports this module and needs neither

def key_id(key: bytes) -> str:
    import hashlib
    return hashlib.blake2b(key, digest_size=8, person=b"walship-key-id").hexdigest()


def generate_key() -> str:
    import base64
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def _parse_keys(text: str, origin: str) -> list[bytes]:
    import base64
    keys = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = base64.b64decode(line, validate=True)
        except ValueError:
            raise ConfigError(f"{origin}: a key is not valid base64", "generate keys with `walship keygen`") from None
        if len(key) != KEY_BYTES:
            raise ConfigError(f"{origin}: a key is {len(key)} bytes, not {KEY_BYTES}",
                              "generate keys with `walship keygen`")
        keys.append(key)
    if not keys:
        raise ConfigError(f"{origin}: no key found", "generate one with `walship keygen`")
    return keys


class Keyring:
    def __init__(self, keys: list[bytes]):
        self.keys = {key_id(k): k for k in keys}
        self.current = keys[0]
        self.current_id = key_id(keys[0])

    def key_for(self, kid: str, name: str) -> bytes:
        key = self.keys.get(kid)
        if key is None:
            raise IntegrityError(f"{name} was encrypted with key {kid}, which is not among the configured keys "
                                 f"({', '.join(self.keys)})", "configure the key it was written with")
        return key


def keyring_from_settings(settings) -> Keyring | None:
    sources = [s for s in ("encryption_key", "encryption_key_file", "encryption_key_command")
               if getattr(settings, s, None)]
    if not sources:
        return None
    if len(sources) > 1:
        raise ConfigError(f"encryption keys are configured twice ({' and '.join(sources)})", "keep one")
    if settings.encryption_key:
        return Keyring(_parse_keys(settings.encryption_key, "WALSHIP_ENCRYPTION_KEY"))
    if settings.encryption_key_file:
        path = settings.encryption_key_file
        try:
            st = os.stat(path)
            with open(path) as fh:
                text = fh.read()
        except OSError as exc:
            raise ConfigError(f"cannot read the encryption key file {path}: {exc.strerror}",
                              "make it readable by the user that runs walship (postgres)") from None
        if st.st_mode & 0o077:
            raise ConfigError(f"the encryption key file {path} is readable by others", f"chmod 600 {path}")
        return Keyring(_parse_keys(text, path))
    import subprocess  # here: only a key command needs it

    try:
        out = subprocess.run(settings.encryption_key_command, shell=True, capture_output=True, text=True,
                             timeout=60)
    except subprocess.TimeoutExpired:
        raise ConfigError("the encryption key command did not finish in 60 s") from None
    if out.returncode != 0:
        # its stderr may hold anything; say only that it failed, never echo what it printed
        raise ConfigError(f"the encryption key command failed (exit {out.returncode})",
                          "run it by hand as the postgres user to see why")
    return Keyring(_parse_keys(out.stdout, "the encryption key command"))


def keyring_for_writing(settings) -> Keyring | None:
    """The key ring new objects are sealed with; refuses to write in clear what WAL-E encrypted."""
    keyring = keyring_from_settings(settings)
    if keyring is None and getattr(settings, "gpg_key_id", None):
        raise ConfigError("WALE_GPG_KEY_ID is set: WAL-E encrypted this archive, and walship would store new "
                          "WAL and backups unencrypted",
                          "set WALSHIP_ENCRYPTION_KEY_FILE to a key from `walship keygen` (or unset "
                          "WALE_GPG_KEY_ID to accept an unencrypted archive)")
    return keyring


def encrypt(chunks: Iterable[bytes], key: bytes, associated: bytes) -> Iterator[bytes]:
    from nacl import bindings as b
    state = b.crypto_secretstream_xchacha20poly1305_state()
    yield b.crypto_secretstream_xchacha20poly1305_init_push(state, key)
    pending = bytearray()
    first = True
    for chunk in chunks:
        pending += chunk
        while len(pending) > MESSAGE_BYTES:
            message = bytes(pending[:MESSAGE_BYTES])
            del pending[:MESSAGE_BYTES]
            sealed = b.crypto_secretstream_xchacha20poly1305_push(
                state, message, associated if first else None, b.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE)
            first = False
            yield _LEN.pack(len(sealed)) + sealed
    sealed = b.crypto_secretstream_xchacha20poly1305_push(
        state, bytes(pending), associated if first else None, b.crypto_secretstream_xchacha20poly1305_TAG_FINAL)
    yield _LEN.pack(len(sealed)) + sealed


def decrypt(chunks: Iterable[bytes], key: bytes, associated: bytes, name: str) -> Iterator[bytes]:
    """Plaintext of an encrypted payload; IntegrityError if it was altered, truncated or sealed otherwise."""
    from nacl import bindings as b
    from nacl.exceptions import RuntimeError as NaclError

    header_bytes = b.crypto_secretstream_xchacha20poly1305_HEADERBYTES
    buf = bytearray()
    state = None
    first = True
    finished = False
    for chunk in chunks:
        buf += chunk
        if state is None:
            if len(buf) < header_bytes:
                continue
            state = b.crypto_secretstream_xchacha20poly1305_state()
            b.crypto_secretstream_xchacha20poly1305_init_pull(state, bytes(buf[:header_bytes]), key)
            del buf[:header_bytes]
        while len(buf) >= _LEN.size:
            (length,) = _LEN.unpack_from(buf)
            if length > MESSAGE_BYTES + 64:
                raise IntegrityError(f"{name} is corrupt: invalid encrypted record length")
            if len(buf) < _LEN.size + length:
                break
            if finished:
                raise IntegrityError(f"{name} is corrupt: data after the end of the encrypted stream")
            sealed = bytes(buf[_LEN.size:_LEN.size + length])
            del buf[:_LEN.size + length]
            try:
                message, tag = b.crypto_secretstream_xchacha20poly1305_pull(state, sealed, associated if first else None)
            except (NaclError, ValueError):
                raise IntegrityError(f"{name} failed authentication: it is corrupt, was tampered with, "
                                     "or was encrypted with another key of the same id") from None
            first = False
            if tag == b.crypto_secretstream_xchacha20poly1305_TAG_FINAL:
                finished = True
            if message:
                yield message
    if not finished or buf:
        raise IntegrityError(f"{name} is truncated: the encrypted stream ends early")
