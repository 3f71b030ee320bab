"""The sandbox's hold-after and hold-before delays (issue 16 item 8): parsing and the JSON form."""
from __future__ import annotations

import pytest

from sandbox.faults import Faults, parse_delay, parse_delay_mode


def test_spec_strings_name_the_mode_after_by_default() -> None:
    assert parse_delay_mode("create_instance=2.5") == ("create_instance", 2.5, "after")
    assert parse_delay_mode("create_instance=2.5:after") == ("create_instance", 2.5, "after")
    assert parse_delay_mode("create_instance=2.5:before") == ("create_instance", 2.5, "before")
    assert parse_delay("create_instance=2.5:before") == ("create_instance", 2.5)
    with pytest.raises(ValueError, match="must be 'after' or 'before'"):
        parse_delay_mode("create_instance=2.5:during")


def test_before_and_after_holds_are_kept_apart_and_round_trip_as_json() -> None:
    faults = Faults.build(["create_instance=2.5:before", "oauth_url=1"])
    assert faults.hold_before("create_instance") == 2.5 and faults.delay_for("create_instance") == 0.0
    assert faults.delay_for("oauth_url") == 1.0 and faults.hold_before("oauth_url") == 0.0
    body = faults.to_json()
    assert body["delay"] == {"oauth_url": 1.0, "create_instance": {"seconds": 2.5, "when": "before"}}
    again = Faults()
    again.load_json(body)
    assert again.to_json() == body
    with pytest.raises(ValueError, match="unknown keys"):
        again.load_json({"delay": {"create_instance": {"seconds": 1, "mode": "before"}}})
