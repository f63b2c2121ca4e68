"""One JSON rule for the project: what Sentinel writes parses as strict JSON."""

from __future__ import annotations

import json
import math

import pytest

from sentinel import jsonenc
from sentinel.cli.report import results_json
from sentinel.evaluate.slo import SLOResult, Status


def _strict_loads(text: str) -> object:
    def refuse(token: str) -> None:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_numbers_are_written_as_null(value: float) -> None:
    text = jsonenc.dumps({"value": value, "nested": [1.5, {"x": value}], "t": (value,)})
    assert _strict_loads(text) == {"value": None, "nested": [1.5, {"x": None}], "t": [None]}


def test_finite_numbers_and_unknown_objects_survive() -> None:
    assert _strict_loads(jsonenc.dumps({"a": 0.25, "b": 3, "c": Status.OK})) == {
        "a": 0.25,
        "b": 3,
        "c": "ok",
    }


def test_eval_json_output_is_valid_even_for_an_infinite_threshold_or_value() -> None:
    result = SLOResult("svc", "slo", Status.NO_DATA, math.inf, math.inf, None, 300.0, 0.0)
    parsed = _strict_loads(results_json([result]))
    assert isinstance(parsed, list) and parsed[0]["value"] is None
    assert parsed[0]["threshold"] is None


@pytest.mark.parametrize("size", [1, 31, 32, 33, 100])
def test_an_outbox_payload_encoded_in_slices_is_the_text_of_the_whole(size: int) -> None:
    """A storm's message is encoded a few alerts at a time (sentinel/alerting/manager.py);
    what is stored must be exactly what one `jsonenc.dumps` of the payload gives."""
    from sentinel.alerting.manager import _notification
    from sentinel.slicing import finish_now

    batch = [
        {
            "incident_id": f"i{i}",
            "repeat": i % 3,
            "value": [math.nan, math.inf, 0.25][i % 3],
            "labels": {"env": "prod", "région": 'é"\\\n'},
            "status": Status.BREACH,
            "window": (300, None),
        }
        for i in range(size)
    ]
    note = finish_now(_notification("slack", "firing", "svc", batch, 100.0))
    assert note.payload_json == jsonenc.dumps(note.payload)
    assert _strict_loads(note.payload_text())["env"] == "prod"  # type: ignore[index]
