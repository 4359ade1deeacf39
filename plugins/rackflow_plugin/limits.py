"""Bounded input for every route under ``/rackflow``: body size, media type, JSON nesting, parameters.

:class:`RequestLimits` is an ASGI middleware on rackflow's FastAPI app. Before a route sees a request it

- reads the body, refusing it with 413 as soon as it is longer than ``[rackflow] api_max_body_bytes``
  (a too-large ``Content-Length`` is refused before anything is read; a chunked body without one is
  cut off where it crosses the limit);
- refuses a non-empty body that is not JSON with 415 (a route that also takes other media types, such
  as the job submit route's JSDL XML, declares them in its OpenAPI ``requestBody``) — so a cross-site
  form or a ``no-cors`` fetch carrying the UI's cookie cannot reach a route;
- refuses JSON nested deeper than ``[rackflow] api_max_json_depth`` with 400, before any parser could
  run out of stack.

The annotated parameter types below bound path and query parameters to what the databases hold
(Postgres ``INTEGER`` ids, ``VARCHAR(250)`` names, no NUL), so a bad one is a 422 naming it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Path
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

JSON_MEDIA_TYPE = "application/json"
XML_MEDIA_TYPES = ("application/xml", "text/xml")

MAX_ID = 2**31 - 1
"""Largest row id a path may name: Postgres ``INTEGER`` (SQLite's is wider)."""
MAX_NAME = 250
"""Characters of a name in a path or query: Airflow's dag_id/run_id and rackflow's name columns."""
LINE_PATTERN = r"^[^\x00-\x1f\x7f]*$"
"""One line of text: no NUL (Postgres refuses it) and no control characters (they end up in logs)."""

DbId = Annotated[int, Path(ge=1, le=MAX_ID, description="A row id.")]
PathName = Annotated[str, Path(min_length=1, max_length=MAX_NAME, pattern=LINE_PATTERN)]

# Responses every route under /rackflow may give; added to each route's OpenAPI entry.
LIMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Bad input (e.g. JSON nested too deeply)"},
    413: {"description": "Request body larger than [rackflow] api_max_body_bytes"},
    415: {"description": "Request body of a media type the route does not take"},
}

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_OPENERS = frozenset(b"[{")


def json_too_deep(body: bytes, limit: int) -> bool:
    """Whether the JSON text ``body`` nests arrays/objects deeper than ``limit`` (brackets inside
    strings do not count). Linear in the body; no parser runs."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    for byte in _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKET):
        if byte in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``; missing -> ``""``."""
    return (content_type or "").partition(";")[0].strip().lower()


def is_json(media: str) -> bool:
    main, _, sub = media.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


def accepted_media_types(route: BaseRoute) -> frozenset[str]:
    """JSON, plus what the route declares in its OpenAPI ``requestBody`` content."""
    declared: dict[str, Any] = {}
    if isinstance(route, APIRoute) and route.openapi_extra:
        declared = route.openapi_extra.get("requestBody", {}).get("content", {})
    return frozenset({JSON_MEDIA_TYPE, *declared})


class RequestLimits:
    """ASGI middleware enforcing the body size, media type and JSON depth limits (module docstring)."""

    def __init__(
        self, app: ASGIApp, *, routes: Sequence[BaseRoute], max_body_bytes: int, max_json_depth: int
    ) -> None:
        self.app = app
        self.routes = routes  # the app's own route list: routes added later are seen
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await _refuse(scope, receive, send, 400, f"Content-Length {declared[:40]!r} is not a number")
                return
            if int(declared) > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if len(body) > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
        if body:
            media = media_type(headers.get("content-type"))
            accepted = self._accepted(scope)
            if media not in accepted and not (is_json(media) and JSON_MEDIA_TYPE in accepted):
                shown = media or "none"
                await _refuse(
                    scope,
                    receive,
                    send,
                    415,
                    f"Content-Type {shown[:80]} is not accepted here: send " + " or ".join(sorted(accepted)),
                )
                return
            if is_json(media) and json_too_deep(bytes(body), self.max_json_depth):
                await _refuse(
                    scope,
                    receive,
                    send,
                    400,
                    f"JSON body nests deeper than {self.max_json_depth} levels "
                    "([rackflow] api_max_json_depth)",
                )
                return
        await self.app(scope, _replay(bytes(body), receive), send)

    def _accepted(self, scope: Scope) -> frozenset[str]:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return accepted_media_types(route)
        return frozenset({JSON_MEDIA_TYPE})

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _refuse(
            scope,
            receive,
            send,
            413,
            f"request body larger than {self.max_body_bytes} bytes ([rackflow] api_max_body_bytes)",
        )


async def _refuse(scope: Scope, receive: Receive, send: Send, status_code: int, detail: str) -> None:
    # Connection: close — the rest of a refused body is never read, so the connection cannot be reused.
    response = JSONResponse({"detail": detail}, status_code=status_code, headers={"Connection": "close"})
    await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the already-read body to the app once, then waits on the client."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
