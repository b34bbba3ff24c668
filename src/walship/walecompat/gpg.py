"""WAL-E's optional encryption: with WALE_GPG_KEY_ID set it ran `gpg -e -z 0 -r KEY` after lzop.

An encrypted object keeps its `.lzo` name, so encryption is recognised by its
content: an lzop stream starts with lzop's magic, an OpenPGP message with a
packet tag byte (high bit set). Decryption runs `gpg --decrypt` with the user's
keyring (GNUPGHOME): WAL-E too only used the key id to encrypt, and needed the
secret key in the keyring (without a passphrase, or unlocked in gpg-agent) to
read its objects back.
"""

from __future__ import annotations

from walship.errors import ConfigError, IntegrityError, WalshipError
from walship.walecompat import filters


class KeyUnavailable(ConfigError):
    """An encrypted object whose secret key is not in this user's keyring."""
    aborts_recovery = True                    # the file exists: recovery must not end before it


def looks_encrypted(head: bytes) -> bool:
    """True when head is the start of an OpenPGP message (binary or ASCII-armoured)."""
    if head.startswith(b"-----BEGIN PGP MESSAGE-----"):
        return True
    if not head:
        return False
    tag_byte = head[0]
    if not tag_byte & 0x80:
        return False
    if tag_byte & 0x40:                       # new packet format: tag in the low 6 bits
        tag = tag_byte & 0x3F
    else:                                     # old format: tag in bits 5..2
        tag = (tag_byte >> 2) & 0x0F
    # a message starts with a (public-key or symmetric) session key, or is itself encrypted data
    return tag in (1, 3, 9, 18)


def decrypt_filter(what: str, key_id: str | None) -> filters.Filter:
    """The pipeline stage that decrypts a GPG message; failures name `what`."""
    program = filters.require_program("gpg", "gnupg")

    def failure(status: int, stderr: str) -> WalshipError:
        lowered = stderr.lower()
        if "no secret key" in lowered or "secret key not available" in lowered:
            wanted = f" (WALE_GPG_KEY_ID={key_id})" if key_id else ""
            return KeyUnavailable(f"{what} is encrypted with GPG and its secret key is not available"
                                  f" to this user{wanted}",
                                  "import WAL-E's secret key into the keyring of the user that runs "
                                  "walship (GNUPGHOME), without a passphrase or unlocked in gpg-agent")
        if "bad passphrase" in lowered or "no passphrase" in lowered or "pinentry" in lowered:
            return KeyUnavailable(f"{what} is encrypted with GPG and its secret key is locked by a passphrase",
                                  "unlock the key in gpg-agent first")
        return IntegrityError(f"{what} could not be decrypted: gpg: {_gpg_reason(stderr)}")
    return filters.Filter([program, "--batch", "--quiet", "--no-tty", "--pinentry-mode", "error",
                           "--decrypt"], failure)


def _gpg_reason(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    # gpg prints several lines; the last "gpg: ..." one usually says why it failed
    line = lines[-1] if lines else "no message"
    return line[len("gpg: "):] if line.startswith("gpg: ") else line
