"""The Python client library for publishers (the guide's `queue_message` / `send_personal_message`)."""

from .client import PushClient, PublishError, StreamPublisher

__all__ = ["PushClient", "PublishError", "StreamPublisher"]
