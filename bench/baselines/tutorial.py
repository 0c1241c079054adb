"""Baseline peer 1: the FastAPI tutorial's broadcast (a set of WebSockets, `send_text` in a loop).

`/ws` subscribers; `/publish` a WebSocket whose every text frame is broadcast to all subscribers.
Run: uvicorn bench.baselines.tutorial:app
"""

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()
clients: set[WebSocket] = set()


@app.websocket("/ws")
async def subscriber(websocket: WebSocket) -> None:
    await websocket.accept()
    clients.add(websocket)
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        clients.discard(websocket)


@app.websocket("/publish")
async def publisher(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive_text()
            for client in list(clients):
                await client.send_text(message)
    except WebSocketDisconnect:
        pass
