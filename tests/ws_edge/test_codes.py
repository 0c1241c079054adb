"""Close codes: reasons fit a close frame (RFC 6455: 125 bytes of payload, 2 of them the code); the
browser client's copy of the terminal codes is the edge's."""

from __future__ import annotations

import re
from pathlib import Path

import ws_edge
from ws_edge.core.codes import MAX_CLOSE_REASON_BYTES, TERMINAL_CLOSE_CODES, CloseCode, fit_close_reason

CLIENT_LIBRARY = Path(ws_edge.__file__).parent / "static" / "push-client.js"


def test_a_reason_that_fits_is_kept_whole():
    assert fit_close_reason("token expired") == "token expired"
    assert fit_close_reason("") == ""
    exact = "x" * MAX_CLOSE_REASON_BYTES
    assert fit_close_reason(exact) == exact


def test_a_long_reason_is_cut_and_marked():
    assert fit_close_reason("x" * 124) == "x" * 120 + "\u2026"
    assert len(fit_close_reason("y" * 10_000).encode()) == 123


def test_a_cut_never_splits_a_character():
    # "é" is 2 bytes: 120 bytes of room hold 60 of them; "€" is 3 bytes: 40 of them.
    assert fit_close_reason("é" * 200) == "é" * 60 + "\u2026"
    assert fit_close_reason("a" + "é" * 200) == "a" + "é" * 59 + "\u2026"  # 119 bytes + 3
    assert fit_close_reason("ab" + "€" * 100) == "ab" + "€" * 39 + "\u2026"  # 119 bytes + 3
    for reason in ("a" + "é" * 200, "ab" + "€" * 100, "😀" * 50):
        assert len(fit_close_reason(reason).encode()) <= MAX_CLOSE_REASON_BYTES


def js_constant(name: str) -> str:
    match = re.search(rf"export const {name} = (.+?);", CLIENT_LIBRARY.read_text())
    assert match, f"{name} not found in push-client.js"
    return match.group(1)


def test_the_browser_clients_terminal_close_codes_are_the_edges():
    """The browser stops reconnecting on exactly the codes the edge documents as terminal."""
    codes = {int(code) for code in re.findall(r"\d+", js_constant("TERMINAL_CLOSE_CODES"))}
    assert codes == {int(code) for code in TERMINAL_CLOSE_CODES}
    assert int(js_constant("TOKEN_EXPIRED")) == CloseCode.TOKEN_EXPIRED
