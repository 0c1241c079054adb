"""Baseline peer 2: FastAPI + encode/broadcaster (memory backend), as its README's chat example.

`/ws` subscribers (one broadcaster subscription each); `/publish` a WebSocket whose text frames are
published to the channel. Run: uvicorn bench.baselines.broadcaster_app:app
"""

from contextlib import asynccontextmanager

import anyio
from broadcaster import Broadcast
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

broadcast = Broadcast("memory://")


@asynccontextmanager
async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
    await broadcast.connect()
    yield
    await broadcast.disconnect()


app = FastAPI(lifespan=lifespan)


@app.websocket("/ws")
async def subscriber(websocket: WebSocket) -> None:
    await websocket.accept()

    async def receiver() -> None:
        try:
            async for _ in websocket.iter_text():
                pass
        finally:
            group.cancel_scope.cancel()

    async def sender() -> None:
        async with broadcast.subscribe(channel="bench") as subscription:
            async for event in subscription:
                await websocket.send_text(event.message)

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(receiver)
            group.start_soon(sender)
    except WebSocketDisconnect:
        pass


@app.websocket("/publish")
async def publisher(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await broadcast.publish(channel="bench", message=await websocket.receive_text())
    except WebSocketDisconnect:
        pass
