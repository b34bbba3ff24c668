"""Every parser of stored or operator input fails only with walship's own one-line errors, whatever it reads."""

import json

from hypothesis import example, given, settings
from hypothesis import strategies as st

from walship.backup.catalog import Marker
from walship.backup.manifest import parse_lines
from walship.errors import WalshipError
from walship.pg.walnames import parse_history, parse_lsn
from walship.reporting.plugin import parse_age
from walship.walecompat.backups import is_wale_name, start_point

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_manifest_lines_from_garbage(data):
    try:
        list(parse_lines([data], "part_00000.manifest"))
    except WalshipError as exc:
        assert "part_00000.manifest" in str(exc)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["path", "type", "mode", "mtime", "size", "sha256", "target"]), json_values))
def test_manifest_lines_from_wrong_json(doc):
    try:
        list(parse_lines([json.dumps(doc).encode()], "m"))
    except WalshipError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())))
def test_completion_marker_from_garbage(data):
    try:
        Marker.from_json(data, "backups/x/complete.json")
    except WalshipError as exc:
        assert "backups/x/complete.json" in str(exc)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
@example("\u00b2 0")                 # "²".isdigit() is true and int("²") fails: a digit that is not decimal
def test_history_files_and_lsns(text):
    for parse in (parse_history, parse_lsn):
        try:
            parse(text)
        except WalshipError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_ages(text):
    try:
        assert parse_age(text) >= 0
    except ValueError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_wale_backup_names(text):
    if is_wale_name(text):
        start_point(text)
