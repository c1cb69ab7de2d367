"""OpenAI-style errors: every failure the server reports is ``{"error": {...}}`` JSON.

The body is what the OpenAI API sends (``message``, ``type``, ``param``, ``code``), so the
official client raises its usual exception classes (``BadRequestError`` for 400,
``AuthenticationError`` for 401, ``NotFoundError`` for 404, ...) with the message shown.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


class APIError(Exception):
    """A request the server refuses (or could not serve), with the HTTP status to send."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = INVALID_REQUEST,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = (
            status,
            message,
            param,
            code,
            kind,
        )

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(HTTPStatus.BAD_REQUEST, message, param, code)


def install_handlers(app: FastAPI) -> None:
    """Answer unknown routes, wrong methods and unexpected failures in the OpenAI format
    (FastAPI's own are ``{"detail": ...}`` and a plain-text 500)."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == HTTPStatus.UNAUTHORIZED else None
        return exc.response(headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return APIError(exc.status_code, message).response(getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        message = f"the server failed to answer ({type(exc).__name__}: {exc}); see its log"
        return APIError(HTTPStatus.INTERNAL_SERVER_ERROR, message, kind=SERVER_ERROR).response()
