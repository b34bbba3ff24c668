"""Flat JSON objects (the repository record, every stored object's header) read and written without json.

Why: the json module (with re, enum and functools behind it) costs each cold archive_command and
restore_command 4 to 7 ms, and those run once per WAL segment. What these documents hold is small and
flat; anything else goes to json, so the result is always exactly json's (property-tested against it).
"""

from __future__ import annotations

_JSON_WORDS = {"null": None, "true": True, "false": False}
_DIGITS = frozenset("0123456789")


def loads(data: bytes) -> dict | None:
    """What json.loads reads from data, when data is a flat object (string keys; values strings without
    escapes, integers, true, false, null); None for anything else (the caller lets json read it).

    >>> loads(b'{\\n "format": 2,\\n "pg_major": null,\\n "repository_id": "ab"\\n}')
    {'format': 2, 'pg_major': None, 'repository_id': 'ab'}
    >>> loads(b'{"a": "x\\\\u0041"}') is None, loads(b'{"a": 1.5}') is None, loads(b'[1]') is None
    (True, True, True)
    """
    try:
        text = data.decode().strip(" \t\n\r")
    except UnicodeDecodeError:
        return None
    if text[:1] != "{" or text[-1:] != "}" or "\\" in text:
        return None
    doc: dict = {}
    body = text[1:-1].strip(" \t\n\r")
    if not body:
        return doc
    for item in body.split(","):        # no value holds a comma or a quote: strings are checked below
        key, colon, value = item.partition(":")
        key, value = key.strip(" \t\n\r"), value.strip(" \t\n\r")
        if (not colon or len(key) < 2 or key[0] != '"' or key[-1] != '"' or '"' in key[1:-1]
                or key[1:-1] in doc):
            return None
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"' and '"' not in value[1:-1]:
            if any(c < " " for c in value):
                return None
            doc[key[1:-1]] = value[1:-1]
        elif value in _JSON_WORDS:
            doc[key[1:-1]] = _JSON_WORDS[value]
        elif value and _DIGITS.issuperset(value.removeprefix("-")) and value.removeprefix("-")[:1] not in ("", "0") \
                or value in ("0", "-0"):
            doc[key[1:-1]] = int(value)
        else:
            return None
    return doc


def dumps(doc: dict) -> str:
    """json.dumps(doc, separators=(",", ":"), sort_keys=True), for a flat dict of printable-ASCII strings,
    integers, booleans and None (json itself for anything else).

    >>> dumps({"size": 16, "codec": "zstd", "enc": None, "x": True})
    '{"codec":"zstd","enc":null,"size":16,"x":true}'
    """
    parts = []
    for key in sorted(doc):
        value = doc[key]
        if not isinstance(key, str) or not _printable(key):
            break
        if value is None or isinstance(value, bool):
            text = "null" if value is None else "true" if value else "false"
        elif isinstance(value, int):
            text = str(int(value))
        elif isinstance(value, str) and _printable(value):
            text = f'"{value}"'
        else:
            break
        parts.append(f'"{key}":{text}')
    else:
        return "{" + ",".join(parts) + "}"
    import json
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def _printable(text: str) -> bool:
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text
