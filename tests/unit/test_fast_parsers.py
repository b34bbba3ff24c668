"""The cold paths' own small parsers (the config file's TOML, the repository record's JSON) read exactly what
tomllib and json read, or leave the text to them."""

import doctest
import json
import tomllib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from walship import flatjson
from walship.config import _simple_toml
from walship.repo import record

CONTRIB = Path(__file__).parents[2] / "contrib" / "walship.toml"


def _tomllib(text: str):
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return "refused"


def test_the_shipped_example_config_takes_the_fast_path_and_reads_as_tomllib_reads_it():
    text = CONTRIB.read_text()
    assert _simple_toml(text) == tomllib.loads(text)


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=' \t\n\r#=[]"\'\\abk_-0179.+truefalsx\x00\x7fé', max_size=60))
def test_anything_the_fast_path_reads_tomllib_reads_the_same(text):
    simple = _simple_toml(text)
    if simple is not None:
        assert simple == _tomllib(text), text


keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-0123456789", min_size=1, max_size=8)
plain_strings = st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters='"\\'), max_size=12)
plain_values = st.one_of(st.booleans(), st.integers(-10**20, 10**20), plain_strings)
other_values = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
                         st.lists(st.integers(), max_size=3))


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' if any(
            c in value for c in '"\\') or any(ord(c) < 32 for c in value) else f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return repr(value)


def _document(tables: dict, comments: bool) -> str:
    lines = []
    for table, entries in tables.items():
        if table:
            lines.append(f"[{table}]" + ("  # a table" if comments else ""))
        for key, value in entries.items():
            lines.append(f"{key} = {_toml_value(value)}" + ("   # why" if comments else ""))
        lines.append("")
    return "\n".join(lines)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.just("") | keys, st.dictionaries(keys, plain_values, max_size=5), max_size=4),
       st.booleans())
def test_a_config_of_plain_settings_takes_the_fast_path(tables, comments):
    text = _document(tables, comments)
    expected = _tomllib(text)
    if expected == "refused":          # a table named like a top-level key
        assert _simple_toml(text) is None
        return
    assert _simple_toml(text) == expected, text


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.just("") | keys, st.dictionaries(keys, st.one_of(plain_values, other_values), max_size=5),
                       max_size=4), st.booleans())
def test_other_values_leave_the_file_to_tomllib(tables, comments):
    text = _document(tables, comments)
    simple = _simple_toml(text)
    assert simple is None or simple == _tomllib(text), text


def test_the_record_walship_writes_takes_the_fast_path():
    written = record.RepositoryRecord("a" * 32, "7311", 15, 16 << 20, "2026-12-02T05:40:00Z", "link").to_json()
    assert flatjson.loads(written) == json.loads(written)
    failed, tried = doctest.testmod(flatjson)
    assert tried > 0 and failed == 0


def _json(data: bytes):
    try:
        return json.loads(data)
    except ValueError:
        return "refused"


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=' \t\n\r{}[]:,"\\abu0179.-+enultrfs\x00é', max_size=50))
def test_anything_the_records_fast_path_reads_json_reads_the_same(text):
    data = text.encode()
    flat = flatjson.loads(data)
    if flat is not None:
        assert flat == _json(data), text


def _plain(text: str, extra: str) -> bool:
    return all(32 <= ord(c) <= 126 and c not in '"\\' + extra for c in text)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.text(max_size=8), st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8),
                                                      st.floats(allow_nan=False)), max_size=6),
       st.sampled_from([None, 1]))
def test_any_flat_object_reads_as_json_reads_it_or_goes_to_json(doc, indent):
    data = json.dumps(doc, indent=indent).encode()
    flat = flatjson.loads(data)
    assert flat is None or flat == doc
    if all(_plain(k, ",:") for k in doc) and all(
            not isinstance(v, float) and (not isinstance(v, str) or _plain(v, ",")) for v in doc.values()):
        assert flat == doc, data


@settings(max_examples=1000, deadline=None)
@given(st.dictionaries(st.text(max_size=8), st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8),
                                                      st.floats(allow_nan=False), st.lists(st.integers(), max_size=2)),
                       max_size=6))
def test_headers_are_written_byte_for_byte_as_json_writes_them(doc):
    assert flatjson.dumps(doc) == json.dumps(doc, separators=(",", ":"), sort_keys=True)
