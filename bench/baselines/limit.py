"""The limit: the least a Python server can do to fan one topic out (picows on uvloop).

`/ws` subscribers; `/publish` a WebSocket whose every text frame is a message. What arrives in one
turn of the event loop is parsed (orjson), then encoded once, as the message itself or one
`{"type":"batch","messages":[...]}` frame of all of them, framed once, and the same bytes written to
every subscriber's transport: no per-socket work but the write. Batches grow by themselves when the
server is busy (more arrives per turn), with no cap. Not a product: no auth, no topics, no limits.

    python -m bench.baselines.limit --port 8100
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct

import orjson
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

subscribers: set[asyncio.Transport] = set()
pending: list[object] = []


def text_frame(payload: bytes) -> bytes:
    length = len(payload)
    if length < 126:
        return bytes((0x81, length)) + payload
    if length < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, length) + payload
    return struct.pack("!BBQ", 0x81, 127, length) + payload


def no_delay(transport: WSTransport) -> None:
    """TCP_NODELAY, as uvloop and Node set it: aiofastnet (picows's transport) sets it only on sockets
    whose `proto` is IPPROTO_TCP, which an accepted socket's is not (0), and Nagle's algorithm then
    holds small frames back for the peer's delayed ACK (p50 60-70 ms at 100 msg/s)."""
    sock = transport.underlying_transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def flush() -> None:
    messages = pending[:]
    pending.clear()
    payload = orjson.dumps(messages[0] if len(messages) == 1 else {"type": "batch", "messages": messages})
    wire = text_frame(payload)
    for transport in subscribers:
        transport.write(wire)


class Subscriber(WSListener):
    def on_ws_connected(self, transport: WSTransport) -> None:
        no_delay(transport)
        self.transport = transport.underlying_transport
        subscribers.add(self.transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        subscribers.discard(self.transport)


class Publisher(WSListener):
    def on_ws_connected(self, transport: WSTransport) -> None:
        no_delay(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            if not pending:
                asyncio.get_running_loop().call_soon(flush)  # once per loop turn
            pending.append(orjson.loads(frame.get_payload_as_bytes()))
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.disconnect()


def listener(request: WSUpgradeRequest) -> WSListener | None:
    path = request.path.split(b"?")[0] if isinstance(request.path, bytes) else request.path.split("?")[0]
    return {"/ws": Subscriber, b"/ws": Subscriber, "/publish": Publisher, b"/publish": Publisher}.get(path, lambda: None)()


async def main(port: int) -> None:
    server = await ws_create_server(listener, "127.0.0.1", port, backlog=4096)
    print(f"listening on {port}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(main(parser.parse_args().port))
