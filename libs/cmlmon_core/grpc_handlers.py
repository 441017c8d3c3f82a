"""Putting code around a gRPC method handler: the one way the shared server's per-method layers (metrics, the
caller's trace context, admission) wrap a method, each once, when the server first sees it.

A layer is written once, as `enter(context)` (awaited before the call's behaviour; what it returns is handed to
`leave`) and an optional `leave(context, entered, error)` (after it, with the exception that ended it or None);
rewrap applies it to every kind of handler."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

Enter = Callable[[Any], Awaitable[Any]]  # context -> what leave gets
Leave = Callable[[Any, Any, BaseException | None], None]  # (context, what enter returned, the error or None)


def rewrap(handler: Any, enter: Enter, leave: Leave | None = None) -> Any:
    """The handler with enter before and leave after each call. A streaming handler may be either style grpc.aio
    allows, an async generator yielding the responses or a coroutine writing them with context.write (the health
    service's Watch): the wrapper keeps the style, so that grpc.aio drives it the same way. A stream that its
    client abandons ends with GeneratorExit or CancelledError, which leave sees like any other error."""
    after = leave or _nothing
    if handler.unary_unary or handler.stream_unary:
        behaviour = handler.unary_unary or handler.stream_unary

        async def unary(request: Any, context: Any) -> Any:
            entered = await enter(context)
            try:
                response = await behaviour(request, context)
            except BaseException as exc:
                after(context, entered, exc)
                raise
            after(context, entered, None)
            return response

        make = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
        return make(unary, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)
    inner = handler.unary_stream or handler.stream_stream
    make_stream = (grpc.unary_stream_rpc_method_handler if handler.unary_stream
                   else grpc.stream_stream_rpc_method_handler)
    if inspect.isasyncgenfunction(inner):
        async def streamed(request: Any, context: Any) -> AsyncIterator[Any]:
            async with _Around(context, enter, after):
                async for item in inner(request, context):
                    yield item

        return make_stream(streamed, request_deserializer=handler.request_deserializer,
                           response_serializer=handler.response_serializer)

    async def written(request: Any, context: Any) -> None:
        async with _Around(context, enter, after):
            await inner(request, context)

    return make_stream(written, request_deserializer=handler.request_deserializer,
                       response_serializer=handler.response_serializer)


class _Around:
    """enter and leave around a streamed call (a unary call, the hot path, has them written out in place)."""

    def __init__(self, context: Any, enter: Enter, leave: Leave) -> None:
        self._context, self._enter, self._leave = context, enter, leave
        self._entered: Any = None

    async def __aenter__(self) -> None:
        self._entered = await self._enter(self._context)

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> None:
        self._leave(self._context, self._entered, error)


def _nothing(context: Any, entered: Any, error: BaseException | None) -> None:
    pass
