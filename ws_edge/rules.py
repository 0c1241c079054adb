"""The edge's settings as the rules every session keeps (core/session.py SessionRules), and the hook
client they need: built once at start-up."""

from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatchcase

import grpc

from common.grpc_security import secure_channel
from common.presence_rules import PresenceRules

from .config import EdgeSettings, patterns
from .core.auth import TokenVerifier
from .core.hooks import HookRules
from .core.permissions import TopicPolicy
from .core.session import SessionRules
from .hook_client import HookClient
from .push_link import CHANNEL_OPTIONS


def matcher(value: str) -> Callable[[str], bool]:
    """Whether a topic matches one of the comma-separated patterns of `value`."""
    found = patterns(value)
    if not found:
        return lambda topic: False
    return lambda topic: any(fnmatchcase(topic, pattern) for pattern in found)


def session_rules(settings: EdgeSettings, verifier: TokenVerifier | None, policy: TopicPolicy,
                  handles: Callable[[str], bool],
                  presence: Callable[[], PresenceRules] = PresenceRules) -> SessionRules:
    s = settings
    hooks = HookRules(connect=s.hook_connect, refresh=s.hook_refresh, rpc=s.hook_rpc,
                      rpc_unknown_types=s.hook_rpc_unknown_types, subscribe=matcher(s.hook_subscribe_topics),
                      publish=matcher(s.hook_publish_topics))
    return SessionRules(
        verify=verifier.verify if verifier is not None else None, allow_anonymous=s.allow_anonymous,
        may_subscribe=policy.can_subscribe, handles=handles, max_frame_bytes=s.max_frame_bytes,
        max_topics=s.max_topics_per_connection, rate_limit=s.rate_limit, rate_burst=s.rate_burst,
        client_timeout=s.client_timeout, auth_timeout=s.auth_timeout, refresh_notice=s.token_refresh_notice,
        may_publish=policy.can_publish, needs_subscription_token=matcher(s.subscription_token_topics),
        verify_subscription=verifier.verify_subscription if verifier is not None else None, hooks=hooks,
        presence=presence, batch_max_messages=s.batch_max_messages)


def grpc_channel(settings: EdgeSettings, address: str) -> grpc.aio.Channel:
    """A gRPC channel to a backend (push or task service), with the configured bearer token and TLS."""
    s = settings
    return secure_channel(address, token=s.grpc_token.get_secret_value() if s.grpc_token else None,
                          ca_file=s.grpc_tls_ca_file, cert_file=s.grpc_tls_cert_file, key_file=s.grpc_tls_key_file,
                          server_name=s.grpc_tls_server_name, options=CHANNEL_OPTIONS)


def hook_client(settings: EdgeSettings) -> HookClient | None:
    if not settings.hooks_on or settings.hooks_address is None:
        return None
    token = settings.hooks_token.get_secret_value() if settings.hooks_token else None
    return HookClient(settings.hooks_address, settings.hook_timeout, settings.hook_max_in_flight, token)
