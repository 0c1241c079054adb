"""The client_id convention: assigned ids route by their edge's mark, chosen ids by themselves."""

from __future__ import annotations

import re

from common.client_ids import assign_client_id, chosen_client_id_error, new_edge_mark, route_key, routed_by_itself


def test_assigned_ids_route_by_the_mark_of_their_edge():
    mark = new_edge_mark()
    assert re.fullmatch(r"~[0-9a-f]{12}", mark)
    first, second = assign_client_id(mark), assign_client_id(mark)
    assert re.fullmatch(re.escape(mark) + r"\.[0-9a-f]{32}", first) and first != second
    assert route_key(first) == route_key(second) == mark
    assert not routed_by_itself(first) and not routed_by_itself(second)
    assert new_edge_mark() != mark


def test_chosen_ids_route_by_themselves_and_may_not_look_assigned():
    for chosen in ("alice-1", "a.b", "x~y.z", "~"):
        assert route_key(chosen) == chosen and routed_by_itself(chosen)
    assert chosen_client_id_error("alice-1", 128) is None
    assert chosen_client_id_error("", 128) == "invalid client_id"
    assert chosen_client_id_error("x" * 129, 128) == "invalid client_id"
    assert chosen_client_id_error("tab\there", 128) == "invalid client_id"
    assert "may not begin with '~'" in (chosen_client_id_error("~0123.spoof", 128) or "")
    assert "may not begin with '~'" in (chosen_client_id_error("~plain", 128) or "")
