"""Read timeouts for what uvicorn leaves open: a request's headers and its body.

uvicorn times out idle keep-alive connections but not a client that sends half of its headers
and then nothing (each such connection is held for good), and starlette reads a body for as
long as it trickles in. Here a request's headers must be complete within ``timeout_s`` of the
connection opening (or of the previous response), and its body within ``timeout_s`` of the
handler starting to read it; a connection that misses the header deadline is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

from minigpt4.serve.errors import APIError

DEFAULT_READ_TIMEOUT_S = 30.0


def header_timeout_protocol(timeout_s: float) -> type:
    """uvicorn's h11 protocol closing connections whose request headers are late."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            self._header_timer = self.loop.call_later(timeout_s, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()  # a request's headers are in

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._disarm()
            self._arm()  # the next request on this connection

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _headers_late(self) -> None:
            self._header_timer = None
            waiting = self.cycle is None or self.cycle.response_complete
            if waiting and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol


async def read_body(chunks: AsyncIterator[bytes], timeout_s: float) -> AsyncIterator[bytes]:
    """``chunks`` (a request's body), ended with a 408 once it has taken ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    iterator = aiter(chunks)
    while True:
        left = deadline - loop.time()
        try:
            if left <= 0:
                raise TimeoutError
            piece = await asyncio.wait_for(anext(iterator), left)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise APIError(
                HTTPStatus.REQUEST_TIMEOUT,
                f"the request body did not arrive within {timeout_s:g} s",
                code="request_timeout",
            ) from None
        yield piece
