"""Token redaction in log lines: parameter names are compared percent-decoded, as the edge reads them."""

from __future__ import annotations

import logging

from ws_edge.logs import RedactTokens, redact_query_tokens

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl"


def test_token_values_are_redacted_whatever_the_encoding_of_the_name():
    line = '127.0.0.1:5000 - "WebSocket /ws?{}" [accepted]'
    for query in (f"token={JWT}", f"%74oken={JWT}", f"t%6Fk%65n={JWT}", f"%2574oken={JWT}", f"TOKEN={JWT}",
                  f"access_token={JWT}", f"%74%6F%6B%65%6E={JWT}"):
        redacted = redact_query_tokens(line.format(f"client_id=c1&{query}&topics=a,b"))
        name = query.split("=")[0]
        assert redacted == line.format(f"client_id=c1&{name}=[redacted]&topics=a,b")
    assert redact_query_tokens(f"/ws?%74oken={JWT}") == "/ws?%74oken=[redacted]"
    assert redact_query_tokens(f"token={JWT}") == "token=[redacted]"


def test_other_parameters_and_lines_are_untouched():
    line = '127.0.0.1:5000 - "WebSocket /ws?client_id=c1&topics=task:progress" [accepted]'
    assert redact_query_tokens(line) == line
    assert redact_query_tokens("no parameters here") == "no parameters here"
    assert redact_query_tokens("tokens: 3 = fine") == "tokens: 3 = fine"


def test_the_filter_rewrites_the_record():
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" [accepted]',
                               ("127.0.0.1:5000", f"/ws?%74oken={JWT}"), None)
    assert RedactTokens().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "WebSocket /ws?%74oken=[redacted]" [accepted]'
