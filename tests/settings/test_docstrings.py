"""Field descriptions come from the docstrings under the fields, read when a schema is written."""

from __future__ import annotations

import pytest

from allocator.settings.docstrings import _dataclasses_under, field_docstrings
from allocator.settings.files import KINDS, json_schema
from allocator.settings.models import BoundsSpec


def test_a_fields_docstring_is_the_string_under_it() -> None:
    docs = field_docstrings(BoundsSpec)
    assert docs["floor_usd"] == "Smallest voucher in USD."
    assert set(docs) == {"floor_usd", "cap_usd", "coverage_cap"}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_documented_field_is_described_with_sorted_keys(kind: str) -> None:
    schema = json_schema(kind)
    classes = _dataclasses_under(KINDS[kind])
    # the depeg file's schema wraps its class in a [depeg] table, under $defs
    tables = [] if kind == "depeg" else [(schema, KINDS[kind])]
    tables += [(table, classes[name]) for name, table in schema.get("$defs", {}).items()]
    described = 0
    for table, cls in tables:
        for field, doc in field_docstrings(cls).items():
            prop = table["properties"][field]
            assert prop["description"] == doc
            assert list(prop) == sorted(prop)  # as Pydantic orders a property's keys
            described += 1
    assert described >= 5


def test_the_settings_config_leaves_docstrings_to_the_schema() -> None:
    from allocator.settings.types import SETTINGS_CONFIG

    assert not SETTINGS_CONFIG.get("use_attribute_docstrings")
