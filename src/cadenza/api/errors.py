"""How errors become HTTP responses: one handler per kind, never a 500 for user input.

    NotFound (RunNotFound, PipelineNotFound, TaskNotFound, ArtifactNotFound)  -> 404
    FieldError, ParameterError, request validation                            -> 422
    StateConflict, RunConflict (an action the current state does not allow)   -> 409
    NotAuthenticated -> 401 (with WWW-Authenticate: Bearer), PermissionDenied -> 403
    UsageError and other caller mistakes                                      -> 400
    StoreError (the metadata store cannot be reached)                         -> 503
    anything else                                                             -> 500 (a bug)

Bodies: `{"detail": "...", "hint": "...", "type": "RunNotFound"}` from a CadenzaError's
message and hint; 422 keeps FastAPI's shape, `{"detail": [{"loc": [...], "msg": ...,
"type": ...}]}`, so a client finds the field by its `loc`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from cadenza.core.errors import (
    CadenzaError,
    NotAuthenticated,
    NotFound,
    ParameterError,
    PermissionDenied,
    RunConflict,
    StateConflict,
    StoreError,
)

log = logging.getLogger(__name__)


class FieldError(Exception):
    """A request value the API refuses, named by its location (422 in FastAPI's shape).

    Example:
        >>> raise FieldError([("query", "cursor")], "not a cursor this list handed out")
    """

    def __init__(self, locs: Sequence[tuple[str | int, ...]], msg: str, *,
                 type_: str = "value_error") -> None:
        super().__init__(msg)
        self.errors = [{"loc": list(loc), "msg": msg, "type": type_} for loc in locs]

    @classmethod
    def many(cls, errors: list[dict[str, Any]]) -> FieldError:
        err = cls([], "")
        err.errors = errors
        return err


def json_response(model: BaseModel, status_code: int = 200) -> Response:
    """`model` as the response, serialized once by pydantic. For hot read routes (declare
    `response_model=` on the route for OpenAPI): FastAPI would otherwise validate the
    returned model again against the response model, in a threadpool hop of its own."""
    return Response(model.model_dump_json(), status_code=status_code,
                    media_type="application/json")


def status_of(exc: CadenzaError) -> int:
    if isinstance(exc, NotAuthenticated):
        return 401
    if isinstance(exc, PermissionDenied):
        return 403
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, (StateConflict, RunConflict)):
        return 409
    if isinstance(exc, ParameterError):
        return 422
    if isinstance(exc, StoreError):
        return 503
    return 400


def error_body(exc: CadenzaError) -> dict[str, Any]:
    return {"detail": exc.message, "hint": exc.hint, "type": type(exc).__name__,
            "pipeline": exc.pipeline, "task": exc.task}


async def _cadenza_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CadenzaError)
    status = status_of(exc)
    if status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(exc), status_code=status, headers=headers)


async def _field_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FieldError)
    return JSONResponse({"detail": exc.errors}, status_code=422)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Drop `input` and `ctx`: the input may be large, and ctx may hold exception objects
    # that JSON cannot carry.
    detail = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")),
               "type": str(e.get("type", ""))} for e in exc.errors()]
    return JSONResponse({"detail": detail}, status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    body: dict[str, Any] = {"detail": exc.detail}
    return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path)
    return JSONResponse(
        {"detail": f"internal error: {type(exc).__name__}: {exc}",
         "hint": "this is a bug in Cadenza; please report it with the server's log",
         "type": "InternalError"},
        status_code=500,
    )


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(CadenzaError, _cadenza_error)
    app.add_exception_handler(FieldError, _field_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
