"""ws_edge: the WebSocket edge browsers connect to (FastAPI + uvicorn).

Layout: `core/` is the protocol without I/O (frame parsing and building, error and close codes,
rate limiting, local fan-out); `push_link.py` holds the one gRPC stream to the push service;
`connection.py` one browser's socket; `handlers.py` the message-type registry; `app.py` the routes.
"""
