"""pushctl's server API commands (issue 15): presence, channels, info, disconnect, subscribe, unsubscribe.

Each prints JSON lines on stdout; a refusal is one line on stderr and exit 1 (cli.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import orjson

from common.disconnect_codes import APPLICATION_CODES, DISCONNECTED_BY_SERVER, disconnect_code_error

from .client import PushClient
from .server_api import ServerApiError

SERVER_COMMANDS = ("presence", "channels", "info", "disconnect", "subscribe", "unsubscribe")


def _target(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--user", default="", help="every connection of this user, on every edge")
    target.add_argument("--client-id", default="", help="the connection(s) with this client id")


def _code(value: str) -> int:
    try:
        code = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if (why := disconnect_code_error(code)) is not None:
        raise argparse.ArgumentTypeError(why)
    return code


def add_server_commands(commands: Any, topic: Callable[[str], str]) -> None:
    presence = commands.add_parser("presence", help="who is subscribed to a topic with presence (JSON lines)")
    presence.add_argument("topic", type=topic)
    presence.add_argument("--stats", action="store_true", help="the counts only: clients and users")
    channels = commands.add_parser("channels", help="active topics with their subscribers (JSON lines)")
    channels.add_argument("pattern", nargs="?", default="", help="a glob, e.g. 'task:*' (default: all)")
    commands.add_parser("info", help="every push replica and edge: connections, subscriptions, uptime, version")
    disconnect = commands.add_parser("disconnect", help="close a user's (or a client id's) connections everywhere")
    _target(disconnect)
    disconnect.add_argument("--code", type=_code, default=0, help=f"close code: {DISCONNECTED_BY_SERVER} (default) or "
                            f"{APPLICATION_CODES[0]}-{APPLICATION_CODES[-1]}")
    disconnect.add_argument("--reason", default="", help="close reason (at most 123 bytes)")
    for name in ("subscribe", "unsubscribe"):
        command = commands.add_parser(name, help=f"{name} a user's (or a client id's) connections, server-side")
        command.add_argument("topic", type=topic)
        _target(command)


async def run_server_command(args: argparse.Namespace, client: PushClient) -> list[Any]:
    """What to print, one JSON value a line. Raises ServerApiError."""
    api = client.server
    if args.command == "presence":
        if args.stats:
            return [{"topic": args.topic, **await api.presence_stats(args.topic)}]
        return await api.presence(args.topic)
    if args.command == "channels":
        return [{"topic": t, "subscribers": n} for t, n in (await api.channels(args.pattern)).items()]
    if args.command == "info":
        return await api.info()
    if args.command == "disconnect":
        delivered = await api.disconnect(user=args.user, client_id=args.client_id, code=args.code, reason=args.reason)
    elif args.command == "subscribe":
        delivered = await api.subscribe(args.topic, user=args.user, client_id=args.client_id)
    else:
        delivered = await api.unsubscribe(args.topic, user=args.user, client_id=args.client_id)
    return [{"delivered": delivered}]


def lines(values: list[Any]) -> str:
    return "".join(orjson.dumps(v).decode() + "\n" for v in values)


__all__ = ["SERVER_COMMANDS", "ServerApiError", "add_server_commands", "lines", "run_server_command"]
