# Hypothesis strategies for DIMSE messages: every field of every message class, with values
# that survive the wire unchanged (no padding characters at the ends of text).
from __future__ import annotations

import dataclasses
import string

from hypothesis import strategies as st

from node.dimse.messages import MESSAGE_CLASS, DimseMessage

uids = st.text(alphabet="0123456789.", min_size=1, max_size=64)
ae_titles = (
    st.text(alphabet=string.ascii_uppercase + string.digits + " _-", min_size=1, max_size=16)
    .map(str.strip)
    .filter(bool)
)
long_strings = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=64,
).map(lambda text: text.rstrip(" "))
tags = st.lists(st.integers(0, 0xFFFFFFFF), max_size=8).map(tuple)
unsigned_shorts = st.integers(0, 0xFFFF)


def value_strategy(name: str) -> st.SearchStrategy[object]:
    """The strategy for one message attribute, chosen by its PS3.7 meaning."""
    if name == "has_dataset":
        return st.booleans()
    if name.endswith("_uid"):
        return uids
    if name in ("move_destination", "move_originator_ae_title"):
        return ae_titles
    if name == "error_comment":
        return long_strings
    if name in ("offending_element", "attribute_identifier_list"):
        return tags
    return unsigned_shorts


def message_strategy(cls: type[DimseMessage]) -> st.SearchStrategy[DimseMessage]:
    """Instances of `cls`; optional fields are sometimes None (absent)."""
    arguments: dict[str, st.SearchStrategy[object]] = {}
    for field in dataclasses.fields(cls):
        strategy = value_strategy(field.name)
        optional = field.default is None
        arguments[field.name] = st.none() | strategy if optional else strategy
    return st.builds(cls, **arguments)


messages = st.one_of([message_strategy(cls) for cls in MESSAGE_CLASS.values()])
