"""The Python client library for publishers (the guide's `queue_message` / `send_personal_message`)."""

from .client import PublishError, PushClient, StreamPublisher, outgoing

__all__ = ["PublishError", "PushClient", "StreamPublisher", "outgoing"]
