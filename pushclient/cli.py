"""`python -m pushclient`: publish, tail a topic, start / list / get / cancel tasks, and the server API.

Errors print one line on stderr and exit non-zero (2 for bad arguments, 1 for a refused call).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import grpc
import orjson
from task.v1 import task_service_pb2 as task_pb
from task.v1 import task_service_pb2_grpc as task_grpc

from common import tracing
from common.grpc_security import secure_channel
from common.topics import topic_error
from pushclient.task_json import task_json

from .cli_server import SERVER_COMMANDS, ServerApiError, add_server_commands, lines, run_server_command
from .client import PublishError, PushClient
from .streams import StreamConnection, StreamError


class CliError(Exception):
    """A one-line error for stderr."""


def _topic(value: str) -> str:
    if (why := topic_error(value)) is not None:
        raise argparse.ArgumentTypeError(why)
    return value


def _parsed(value: str) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def _json(value: str) -> bytes:
    _parsed(value)
    return value.encode()


def _json_object(value: str) -> dict[str, Any]:
    """A task's params: a JSON object (the task service refuses anything else; say so as a bad argument)."""
    if not isinstance(parsed := _parsed(value), dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return parsed


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr (no usage dump), exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="pushctl", description=__doc__.splitlines()[0])
    parser.add_argument("--push", default=os.environ.get("PUSH_ADDRESS", "127.0.0.1:50051"),
                        help="push service address (env PUSH_ADDRESS)")
    parser.add_argument("--tasks", default=os.environ.get("TASK_ADDRESS", "127.0.0.1:50052"),
                        help="task service address (env TASK_ADDRESS)")
    parser.add_argument("--token", default=os.environ.get("PUSH_TOKEN"),
                        help="bearer token for the gRPC servers (env PUSH_TOKEN)")
    parser.add_argument("--tls-ca", type=Path, default=os.environ.get("PUSH_TLS_CA_FILE"),
                        help="CA certificate: talk TLS to the gRPC servers (env PUSH_TLS_CA_FILE)")
    parser.add_argument("--tls-server-name", default=os.environ.get("PUSH_TLS_SERVER_NAME"),
                        help="the name in the servers' certificates, when the address is an IP list "
                             "(env PUSH_TLS_SERVER_NAME)")
    parser.add_argument("--trace-file", type=Path, default=os.environ.get("PUSHCTL_TRACE_FILE"),
                        help="trace every publish: spans as JSON lines appended to this file (env PUSHCTL_TRACE_FILE)")
    parser.add_argument("--trace-otlp", action="store_true", default=bool(os.environ.get("PUSHCTL_TRACE_OTLP")),
                        help="trace every publish: spans to the OTLP collector at OTEL_EXPORTER_OTLP_ENDPOINT "
                             "(env PUSHCTL_TRACE_OTLP=1)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    publish = commands.add_parser("publish", help="publish one message")
    target = publish.add_mutually_exclusive_group(required=True)
    target.add_argument("--topic", type=_topic)
    target.add_argument("--client-id", help="a personal message to one connection")
    publish.add_argument("--type", required=True, dest="type_")
    publish.add_argument("--data", type=_json, default=b"", help="the envelope's data, as JSON")
    publish.add_argument("--id", default="")
    publish.add_argument("--retain", action="store_true", help="keep as the topic's current state")

    tail = commands.add_parser("tail", help="print every message published on topics, one JSON per line")
    tail.add_argument("topics", nargs="+", type=_topic)
    tail.add_argument("--count", type=_positive_int, help="stop after this many messages")
    tail.add_argument("--transport", choices=("grpc", "sse", "http_stream"), default="grpc",
                      help="grpc: from the push service (default); sse / http_stream: from an edge, as a browser "
                           "where WebSocket is blocked")
    tail.add_argument("--edge", default=os.environ.get("EDGE_URL", "http://127.0.0.1:8000"),
                      help="the edge for --transport sse / http_stream (env EDGE_URL)")
    tail.add_argument("--edge-token", default=os.environ.get("EDGE_TOKEN"),
                      help="a JWT for the edge, where anonymous connections are off (env EDGE_TOKEN)")

    task = commands.add_parser("task", help="start, list, get or cancel tasks")
    task_commands = task.add_subparsers(dest="task_command", required=True, parser_class=OneLineParser)
    start = task_commands.add_parser("start")
    start.add_argument("--kind", default="", help="the task service's default kind when absent")
    start.add_argument("--symbols", help="comma-separated, e.g. BTCUSDT,ETHUSDT")
    start.add_argument("--interval", type=float, help="seconds per symbol")
    start.add_argument("--params", type=_json_object, help="all parameters as a JSON object")
    task_commands.add_parser("list")
    for name in ("get", "cancel"):
        task_commands.add_parser(name).add_argument("task_id")
    add_server_commands(commands, _topic)
    return parser


async def run(args: argparse.Namespace) -> int:
    if args.command == "publish":
        async with PushClient(args.push, token=args.token, tls_ca_file=args.tls_ca,
                              tls_server_name=args.tls_server_name) as client:
            try:
                reply = await client.publish(args.topic or "", args.type_, args.data, id=args.id,
                                             client_id=args.client_id or "", retain=args.retain)
            except PublishError as exc:
                raise CliError(f"publish refused: {exc}") from None
        print(reply.id)
    elif args.command in SERVER_COMMANDS:
        async with PushClient(args.push, token=args.token, tls_ca_file=args.tls_ca,
                              tls_server_name=args.tls_server_name) as client:
            try:
                sys.stdout.write(lines(await run_server_command(args, client)))
            except ServerApiError as exc:
                raise CliError(f"{args.command} refused: {exc}") from None
    elif args.command == "tail" and args.transport != "grpc":
        await tail_edge(args)
    elif args.command == "tail":
        async with PushClient(args.push, token=args.token, tls_ca_file=args.tls_ca,
                              tls_server_name=args.tls_server_name) as client:
            seen = 0
            try:
                def ready() -> None:
                    print(f"pushctl: tailing {', '.join(args.topics)}", file=sys.stderr, flush=True)

                async for frame in client.tail(args.topics, on_ready=ready):
                    sys.stdout.write(frame.decode() + "\n")
                    sys.stdout.flush()
                    seen += 1
                    if args.count and seen >= args.count:
                        break
            except grpc.aio.AioRpcError as exc:
                raise CliError(f"tail stopped: {exc.code().name}: {exc.details()}") from None
    else:
        await run_task_command(args)
    return 0


async def tail_edge(args: argparse.Namespace) -> None:
    """`tail --transport sse|http_stream`: the edge's HTTP stream, each message (batches unpacked) on a line."""
    params = {"topics": ",".join(args.topics), **({"token": args.edge_token} if args.edge_token else {})}
    try:
        stream = await StreamConnection.open(args.edge.rstrip("/"), "/sse" if args.transport == "sse" else "/stream",
                                             **params)
    except StreamError as exc:
        raise CliError(f"tail refused: {exc}") from None
    except OSError as exc:
        raise CliError(f"cannot reach the edge at {args.edge}: {exc}") from None
    seen = 0
    try:
        while (raw := await stream.recv_raw()) is not None:
            frame = orjson.loads(raw)
            kind = frame.get("type")
            if kind == "connected":
                print(f"pushctl: tailing {', '.join(args.topics)} over {args.transport}", file=sys.stderr, flush=True)
                continue
            if kind == "close":
                raise CliError(f"tail stopped: the edge closed the stream: {frame['data']['code']} "
                               f"{frame['data']['reason']}")
            if kind in ("error", "recovery"):
                print(f"pushctl: {raw.decode()}", file=sys.stderr, flush=True)
                continue
            for message in frame["messages"] if kind == "batch" else [frame]:
                sys.stdout.write(orjson.dumps(message).decode() + "\n")
                seen += 1
                if args.count and seen >= args.count:
                    sys.stdout.flush()
                    return
            sys.stdout.flush()
        raise CliError("tail stopped: the stream ended")
    finally:
        await stream.close()


async def run_task_command(args: argparse.Namespace) -> None:
    async with secure_channel(args.tasks, token=args.token, ca_file=args.tls_ca,
                              server_name=args.tls_server_name) as channel:
        stub = task_grpc.TaskServiceStub(channel)
        try:
            if args.task_command == "start":
                params: dict[str, Any] = args.params or {}
                if args.symbols:
                    params["symbols"] = [s.strip() for s in args.symbols.split(",") if s.strip()]
                if args.interval is not None:
                    params["interval"] = args.interval
                reply = await stub.StartTask(task_pb.StartTaskRequest(kind=args.kind, params=orjson.dumps(params)))
                _print(task_json(reply.task))
            elif args.task_command == "list":
                for task in (await stub.ListTasks(task_pb.ListTasksRequest())).tasks:
                    _print(task_json(task))
            elif args.task_command == "get":
                _print(task_json((await stub.GetTask(task_pb.GetTaskRequest(task_id=args.task_id))).task))
            else:
                _print(task_json((await stub.CancelTask(task_pb.CancelTaskRequest(task_id=args.task_id))).task))
        except grpc.aio.AioRpcError as exc:
            raise CliError(f"task {args.task_command} refused: {exc.code().name}: {exc.details()}") from None


def _print(value: Any) -> None:
    print(orjson.dumps(value).decode())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.trace_file:
        try:
            args.trace_file.open("ab").close()  # spans are written later, from a thread: say now if they cannot be
        except OSError as exc:
            parser.error(f"--trace-file: {exc.strerror}: {args.trace_file}")
    if args.tls_ca is not None:
        try:
            args.tls_ca.read_bytes()  # read only when a command makes its channel: say now if it cannot be
        except OSError as exc:
            parser.error(f"--tls-ca: {exc.strerror or exc}: {args.tls_ca}")
    if args.trace_file or args.trace_otlp:  # its spans are flushed when the process exits
        tracing.configure("pushctl", "file" if args.trace_file else "otlp", file=args.trace_file)
    try:
        return asyncio.run(run(args))
    except CliError as exc:
        print(f"pushctl: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
