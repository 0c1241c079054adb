"""What one fan-out write costs per socket (issue 18), three ways, on 1,000 loopback TCP sockets whose peer (a
reader process on another core) drains them:

    .venv/bin/python -m bench.write_cost [--sockets 1000] [--rounds 40]

- `kernel`: `socket.send` on each socket's descriptor, the floor a Python loop can reach;
- `uvloop`: `transport.write` on each uvloop transport, what a minimal server does (the `limit` baseline's
  loop is this shape);
- `edge`: the edge's fan-out loop over connections, each writing through `ws_edge.wire.SocketWrite`
  (its state checks, then `transport.write`).

Printed: the thread's CPU time per socket for one round (the same ~300 B frame to every socket), median and
minimum over the rounds. The kernel's own work (the loopback's receive path runs in the sender's context)
is in all three.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import selectors
import socket
import time
from collections.abc import Callable
from typing import Any

import uvloop

from ws_edge.core.frames import websocket_text_frame
from ws_edge.wire import SocketWrite

FRAME = websocket_text_frame(b'{"type":"task_progress","data":{"n":1}}' + b" " * 260)


def drain(port: int, count: int, ready: Any, core: int | None) -> None:
    """The peers: connect `count` sockets and read whatever comes, until the server goes away."""
    if core is not None:
        os.sched_setaffinity(0, {core})
    peers = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    selector = selectors.DefaultSelector()
    for peer in peers:
        peer.setblocking(False)
        selector.register(peer, selectors.EVENT_READ)
    ready.set()
    while True:
        for key, _ in selector.select(1):
            try:
                if not key.fileobj.recv(1 << 16):  # type: ignore[union-attr]
                    return
            except BlockingIOError:
                pass


class Served(asyncio.Protocol):
    """What SocketWrite uses of uvicorn's WebSocket protocol: the transport and its three states."""

    def __init__(self, accepted: list[Served]) -> None:
        self.accepted = accepted
        self.writable = asyncio.Event()
        self.writable.set()
        self.close_sent = False
        self.disconnected = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.accepted.append(self)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


class Connection:  # what the edge's fan-out loop reads of a connection
    __slots__ = ("direct",)

    def __init__(self, direct: SocketWrite) -> None:
        self.direct = direct


async def measure(count: int, rounds: int) -> dict[str, list[float]]:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) > 1:
        os.sched_setaffinity(0, {cores[0]})
    accepted: list[Served] = []
    server = await asyncio.get_running_loop().create_server(lambda: Served(accepted), "127.0.0.1", 0)
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    peer = context.Process(target=drain, args=(server.sockets[0].getsockname()[1], count, ready,
                                               cores[1] if len(cores) > 1 else None), daemon=True)
    peer.start()
    await asyncio.to_thread(ready.wait)
    while len(accepted) < count:
        await asyncio.sleep(0.01)
    transports = [served.transport for served in accepted]
    connections = [Connection(SocketWrite(served)) for served in accepted]  # sets the write-buffer limit to 0
    sends = [socket.socket(fileno=os.dup(t.get_extra_info("socket").fileno())).send for t in transports]

    def kernel() -> None:
        for send in sends:
            send(FRAME)

    def uvloop_write() -> None:
        for transport in transports:
            transport.write(FRAME)  # type: ignore[attr-defined]

    def edge() -> None:
        for connection in connections:
            direct = connection.direct
            if direct is None or not direct(FRAME):
                raise RuntimeError("a socket did not take the frame at once")

    ways: dict[str, Callable[[], None]] = {"kernel": kernel, "uvloop": uvloop_write, "edge": edge}
    results: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, write_all in ways.items():
            started = time.thread_time()
            write_all()
            results[name].append((time.thread_time() - started) / count * 1e6)
            await asyncio.sleep(0.01)  # the peer reads it all
    peer.kill()
    server.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    results = uvloop.run(measure(args.sockets, args.rounds))
    floor = sorted(results["kernel"])[len(results["kernel"]) // 2]
    for name, values in results.items():
        values.sort()
        median = values[len(values) // 2]
        print(f"{name:7} median {median:5.2f} µs per socket ({median / floor:.2f}× the kernel loop), min {values[0]:5.2f}")


if __name__ == "__main__":
    main()
