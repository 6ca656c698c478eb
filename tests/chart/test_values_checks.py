"""values.schema.json and validateValues refuse what cannot work, each with a
message that says what to change."""

import helm_python
import pytest

from chart_support import render, values_for


def render_error(values) -> str:
    with pytest.raises(helm_python.HelmError) as raised:
        render(values)
    return str(raised.value)


def test_the_schema_rejects_a_typo_in_a_key():
    message = render_error({"replicaCout": 3})

    assert "replicaCout" in message


def test_the_schema_rejects_a_typo_in_a_nested_key():
    message = render_error({"database": {"existingSecrte": "db"}})

    assert "existingSecrte" in message


def test_the_schema_rejects_a_wrong_type():
    message = render_error({"replicaCount": "three"})

    assert "replicaCount" in message


def test_the_schema_rejects_the_latest_tag():
    message = render_error({"image": {"app": {"tag": "latest"}}})

    assert "tag" in message
