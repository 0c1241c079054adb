import orjson
import pytest

from push_service.core.publication import InvalidPublish, encode_envelope, make_publication


def publish(**overrides):
    fields = {"topic": "task:progress", "type_": "task_progress", "data": b'{"a": 1}', "id_": "m1", "client_id": "",
              "retain": False, "now_ms": 1769847650098, "max_data_bytes": 1024}
    fields.update(overrides)
    return make_publication(**fields)


def test_envelope_splices_data_bytes_in_the_guides_field_order():
    frame = encode_envelope(type_="t", id_='a"b', timestamp_ms=5, data=b'{"x": [1, 2]}', topic="x:y")
    assert frame == b'{"type":"t","id":"a\\"b","timestamp":5,"data":{"x": [1, 2]},"topic":"x:y"}'
    assert list(orjson.loads(frame)) == ["type", "id", "timestamp", "data", "topic"]


def test_envelope_without_data_or_topic_omits_them():
    assert encode_envelope(type_="t", id_="i", timestamp_ms=1, data=b"", topic="") == b'{"type":"t","id":"i","timestamp":1}'


def test_publication_is_validated_and_encoded_once():
    publication = publish()
    assert publication.channel == "t:task:progress"
    assert orjson.loads(publication.frame) == {"type": "task_progress", "id": "m1", "timestamp": 1769847650098,
                                               "data": {"a": 1}, "topic": "task:progress"}


def test_personal_message_routes_by_client_id():
    publication = publish(topic="", client_id="c1")
    assert publication.channel == "c:c1"
    assert "topic" not in orjson.loads(publication.frame)
    # An id an edge assigned routes to that edge's one channel (common/client_ids.py).
    assert publish(topic="", client_id="~0a1b2c3d4e5f." + "f" * 32).channel == "c:~0a1b2c3d4e5f"


def test_missing_id_is_assigned():
    assert len(publish(id_="").id) == 32


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"topic": "no spaces"}, "invalid topic"),
        ({"topic": ""}, "must not be empty"),
        ({"type_": ""}, "type must not be empty"),
        ({"data": b"{"}, "not valid UTF-8 JSON"),
        ({"data": b"x" * 1025}, "the limit is 1024"),
        ({"client_id": "c", "retain": True}, "cannot be retained"),
        ({"id_": "i" * 129}, "id is longer"),
    ],
)
def test_invalid_messages_are_refused_with_a_reason(overrides, fragment):
    with pytest.raises(InvalidPublish, match=fragment):
        publish(**overrides)


def test_an_idempotency_key_is_scoped_to_its_topic_or_its_personal_messages_client_id():
    def scoped(topic: str, client_id: str, key: str) -> str:
        return make_publication(topic=topic, type_="t", data=b"{}", id_="m", client_id=client_id, retain=False,
                                now_ms=1, max_data_bytes=1024).idempotency_key(key)

    assert scoped("a", "", "k") != scoped("b", "", "k")
    assert scoped("a:b", "", "k") != scoped("a", "", "b:k")  # no scope runs into its key
    # Personal messages: per client id, also for ids an edge assigned (which share the edge's channel).
    assert scoped("", "~edge1.1", "k") != scoped("", "~edge1.2", "k")
    assert scoped("", "alice-1", "k") == scoped("", "alice-1", "k")
