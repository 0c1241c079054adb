"""The admin API (/admin/api/*, issue 20.4) over a real system: every endpoint refused without the
admin credential, with a wrong one and with users' tokens (an `admin` role included); 404 everywhere
when EDGE_ADMIN_TOKEN is not set; the server API's refusals as clear JSON errors."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.conftest import start_system
from tests.support.processes import System
from tests.support.timing import timeout
from tests.support.tokens import token

ADMIN_TOKEN = "admin-token-for-tests-which-is-at-least-32-bytes"
ENDPOINTS = [
    ("GET", "/admin/api/info", None), ("GET", "/admin/api/channels", None),
    ("GET", "/admin/api/channels?pattern=room:*", None), ("GET", "/admin/api/presence?topic=room:a", None),
    ("GET", "/admin/api/metrics", None), ("GET", "/admin/api/tail?topic=room:a", None),
    ("POST", "/admin/api/disconnect", {"user": "alice"}),
    ("POST", "/admin/api/unsubscribe", {"user": "alice", "topic": "room:a"}),
    ("POST", "/admin/api/subscribe", {"user": "alice", "topic": "room:a"}),
]
ADMIN_ENV = {"EDGE_ADMIN_TOKEN": ADMIN_TOKEN}
PRESENCE_ENV = {"PUSH_PRESENCE_RULES": "room:*:presence", "PUSH_PRESENCE_TTL": "1.5"}


@pytest.fixture(scope="module")
def admin_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    system = start_system(tmp_path_factory, "admin-api", edge_env=ADMIN_ENV, push_env=PRESENCE_ENV)
    yield system
    system.stop()


def call(url: str, method: str, body: dict | None, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"content-type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            stream = response.headers["content-type"].startswith("text/event-stream")
            return response.status, dict(response.headers), response.read(200) if stream else response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


CREDENTIALS = {
    "none": ({}, 401, "admin_credential_required"),
    "not bearer": ({"authorization": f"Basic {ADMIN_TOKEN}"}, 401, "admin_credential_required"),
    "in a cookie": ({"cookie": f"admin_token={ADMIN_TOKEN}; token={ADMIN_TOKEN}"}, 401, "admin_credential_required"),
    "wrong secret": ({"authorization": f"Bearer {ADMIN_TOKEN}x"}, 403, "not_admin"),
    "a user's token": ({"authorization": f"Bearer {token('alice')}"}, 403, "not_admin"),
    "a user's token with the admin role": ({"authorization": f"Bearer {token('root', roles=['admin'])}"}, 403,
                                           "not_admin"),
}


@pytest.mark.parametrize("credential", list(CREDENTIALS))
@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_every_admin_endpoint_is_refused_without_the_admin_credential(admin_system: System, method, path, body,
                                                                      credential):
    headers, status, code = CREDENTIALS[credential]
    got, answer_headers, raw = call(admin_system.http_url + path, method, body, headers)
    assert got == status
    assert json.loads(raw)["error"]["code"] == code
    assert answer_headers["content-type"] == "application/json"
    if status == 401:
        assert answer_headers["www-authenticate"] == 'Bearer realm="push-admin"'


def test_the_credential_in_the_query_string_opens_nothing(admin_system: System):
    status, _, raw = call(f"{admin_system.http_url}/admin/api/info?token={ADMIN_TOKEN}", "GET", None, {})
    assert (status, json.loads(raw)["error"]["code"]) == (401, "admin_credential_required")


@pytest.mark.parametrize("body", [b'{"code": "nonsense"}', b"{not json", b"\xff" * 100])
def test_the_credential_is_checked_before_the_body(admin_system: System, body: bytes):
    request = urllib.request.Request(admin_system.http_url + "/admin/api/disconnect", data=body, method="POST",
                                     headers={"content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    assert json.loads(refused.value.read())["error"]["code"] == "admin_credential_required"


@pytest.mark.parametrize(("method", "path", "body"), [e for e in ENDPOINTS if "tail" not in e[1]])
def test_the_admin_credential_opens_every_endpoint(admin_system: System, method, path, body):
    status, headers, raw = call(admin_system.http_url + path, method, body, {"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert status == 200, raw
    assert headers["content-type"] == "application/json"


def test_the_tail_opens_with_the_admin_credential(admin_system: System):
    request = urllib.request.Request(admin_system.http_url + "/admin/api/tail?topic=room:tail",
                                     headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.readline() == b"event: ready\n"
        assert response.readline().startswith(b'data: {"topic":"room:tail","edge":"')


def test_a_bad_body_with_the_credential_is_a_json_error(admin_system: System):
    status, _, raw = call(admin_system.http_url + "/admin/api/disconnect", "POST", {"code": "nonsense"},
                          {"authorization": f"Bearer {ADMIN_TOKEN}"})
    error = json.loads(raw)["error"]
    assert (status, error["code"]) == (400, "invalid_body")
    assert error["message"].startswith("code: Input should be a valid integer")
    status, _, raw = call(admin_system.http_url + "/admin/api/disconnect", "POST", {"user": "x" * 20_000},
                          {"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert (status, json.loads(raw)["error"]) == (413, {"code": "body_too_large", "message": "body over 16384 bytes"})


@pytest.mark.parametrize(("path", "body", "status", "code", "message"), [
    ("/admin/api/disconnect", {"user": "alice", "client_id": "x"}, 400, "invalid_argument", "exactly one"),
    ("/admin/api/disconnect", {}, 400, "invalid_argument", "exactly one"),
    # the server API's codes end at 4399 (common/disconnect_codes.py): refused by the page's API itself
    ("/admin/api/disconnect", {"user": "alice", "code": 4400}, 400, "invalid_body", "less than or equal to 4399"),
    ("/admin/api/disconnect", {"user": "alice", "code": 4099}, 400, "invalid_argument", "4100-4399"),
    ("/admin/api/unsubscribe", {"user": "alice", "topic": "bad topic"}, 400, "invalid_argument", "topic"),
    ("/admin/api/subscribe", {"user": "alice"}, 400, "invalid_body", "topic: Field required"),
])
def test_the_server_apis_refusals_are_json_errors(admin_system: System, path, body, status, code, message):
    got, _, raw = call(admin_system.http_url + path, "POST", body, {"authorization": f"Bearer {ADMIN_TOKEN}"})
    error = json.loads(raw)["error"]
    assert (got, error["code"]) == (status, code)
    assert message in error["message"]


@pytest.mark.parametrize("path", ["/admin/api/presence", "/admin/api/presence?topic=", "/admin/api/tail",
                                  "/admin/api/tail?topic=a%20b", "/admin/api/tail?topic=" + "t" * 129,
                                  "/admin/api/channels?pattern=" + "*" * 201])
def test_bad_query_parameters_are_json_errors_after_the_credential(admin_system: System, path):
    status, _, raw = call(admin_system.http_url + path, "GET", None, {})
    assert (status, json.loads(raw)["error"]["code"]) == (401, "admin_credential_required")
    status, _, raw = call(admin_system.http_url + path, "GET", None, {"authorization": f"Bearer {ADMIN_TOKEN}"})
    error = json.loads(raw)["error"]
    assert (status, error["code"]) == (400, "invalid_argument")
    assert error["message"].startswith(("topic: ", "pattern: "))


def test_presence_of_a_topic_without_it_is_a_conflict(admin_system: System):
    status, _, raw = call(admin_system.http_url + "/admin/api/presence?topic=news", "GET", None,
                          {"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert status == 409
    assert json.loads(raw)["error"]["code"] == "failed_precondition"


def test_the_page_is_served_with_a_strict_policy(admin_system: System):
    status, headers, raw = call(admin_system.http_url + "/admin", "GET", None, {})
    assert status == 200 and b"<title>Push admin</title>" in raw
    assert headers["content-security-policy"] == "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
    assert headers["x-frame-options"] == "DENY"


def test_the_page_is_not_served_as_a_static_file_without_its_policy(admin_system: System, system: System):
    for edge in (admin_system, system):
        for path in ("/static/admin.html", "/static/./admin.html", "/static/x/../admin.html"):
            status, _, _ = call(edge.http_url + path, "GET", None, {})
            assert status == 404, path
        status, _, raw = call(edge.http_url + "/static/admin.js", "GET", None, {})
        assert status == 200 and raw


@pytest.mark.parametrize("path", ["/admin", *[e[1] for e in ENDPOINTS]])
def test_without_an_admin_token_there_is_no_admin_page(system: System, path):
    method, body = next(((m, b) for m, p, b in ENDPOINTS if p == path), ("GET", None))
    status, _, _ = call(system.http_url + path, method, body, {"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert status == 404


def admin_get(system: System, path: str) -> dict:
    status, _, raw = call(system.http_url + path, "GET", None, {"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert status == 200, raw
    return json.loads(raw)


def test_a_closed_tail_leaves_no_interest_behind(admin_system: System):
    """The tail is a subscriber of the edge while its response is open (one topic here, and in the
    edge's report), and no longer once the response is closed."""

    def topics() -> float:
        return admin_get(admin_system, "/admin/api/metrics")["values"]["ws_edge_topics"]

    def channels() -> list:
        return admin_get(admin_system, "/admin/api/channels?pattern=room:gone")["channels"]

    assert poll(lambda: topics() == 0)  # another test's tail may still be closing
    request = urllib.request.Request(admin_system.http_url + "/admin/api/tail?topic=room:gone",
                                     headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.readline() == b"event: ready\n"
        assert topics() == 1
        assert poll(lambda: channels() == [{"topic": "room:gone", "subscribers": 1}])
    assert poll(lambda: topics() == 0)
    assert poll(lambda: channels() == [])


def poll(check, limit: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    """Until `check()` is true (generous for a loaded machine); its last answer."""
    deadline = time.monotonic() + timeout(limit)
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return result


def test_an_open_tail_ends_when_the_edge_goes_away(tmp_path_factory: pytest.TempPathFactory):
    """SIGTERM: the tail's response ends with `event: end` while the edge drains, and the edge exits
    as it does without one (the tail holds no shutdown up)."""
    system = start_system(tmp_path_factory, "admin-drain", edge_env=ADMIN_ENV)
    try:
        request = urllib.request.Request(system.http_url + "/admin/api/tail?topic=room:drain",
                                         headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.readline() == b"event: ready\n"
            response.readline(), response.readline()
            started = time.monotonic()
            system.edge.kill(signal.SIGTERM)
            assert response.read() == b'event: end\ndata: {"reason":"going away"}\n\n'
        assert system.edge.proc.wait(timeout(15)) == -signal.SIGTERM  # type: ignore[union-attr]
        assert time.monotonic() - started < timeout(5)
    finally:
        system.stop()
