"""An HTTP request's body, read only when the caller may send one, and never more than a bound: a
FastAPI body parameter is read and parsed whole before any dependency (the credential) is checked."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request

__all__ = ["BodyTooLarge", "ClientDisconnect", "bounded_body"]


class BodyTooLarge(Exception):
    """The body ran past the bound (answer 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"body over {limit} bytes")


async def bounded_body(request: Request, limit: int) -> bytes:
    """The body, of at most `limit` bytes; raises BodyTooLarge as soon as it runs past it (nothing more
    is read), ClientDisconnect when the client went away before sending it all."""
    if (declared := request.headers.get("content-length", "")).isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)
