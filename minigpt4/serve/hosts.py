"""The Host-header allow-list of a server that runs without an API key.

Without a key, anything that can reach the port may ask; a web page in the user's own browser
can too, by DNS rebinding (its attacker-controlled name resolves to 127.0.0.1, and the browser
sends that name as ``Host``). Checking ``Host`` against the names the server is meant to be
reached by stops it: by default the loopback names and the address it was bound to;
``--allowed-hosts`` adds others (``*`` allows any).
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from minigpt4.serve.errors import APIError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("", "0.0.0.0", "::")


def default_allowed_hosts(bind_host: str, extra: Iterable[str] = ()) -> list[str]:
    """The loopback names, the bound address (unless it is a wildcard) and ``extra``."""
    names = list(LOOPBACK_NAMES)
    if bind_host not in WILDCARD_BINDS:
        names.append(bind_host)
    return names + [name.strip().lower() for name in extra if name.strip()]


def host_name(header: str) -> str:
    """The name in a Host header, without its port (``[::1]:8000`` -> ``::1``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostAllowList:
    """ASGI middleware answering a request whose Host is not allowed with an OpenAI-style 400."""

    def __init__(self, app: Any, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = {name.lower() for name in allowed}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or "*" in self.allowed:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"host", b"").decode("latin-1")
        if host_name(given) in self.allowed:
            await self.app(scope, receive, send)
            return
        error = APIError(
            HTTPStatus.BAD_REQUEST,
            f"Host {given!r} is not one this server answers to (it runs without an API key): "
            "start it with --allowed-hosts NAME, or with an API key",
            code="host_not_allowed",
        )
        await error.response()(scope, receive, send)
