"""Putting code around a gRPC method handler: the one way the shared server's per-method layers (metrics, the
caller's trace context, admission) wrap a method, each once, when the server first sees it."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc

Behaviour = Callable[[Any, Any], Awaitable[Any]]  # (request, context) -> the response
Around = Callable[[Any], AbstractAsyncContextManager[Any]]  # context -> what a streamed call runs inside


def rewrap(handler: Any, unary: Callable[[Behaviour], Behaviour], around: Around) -> Any:
    """The handler with its behaviour wrapped: a unary response's by unary(behaviour) (the path every call takes:
    plain code), a streamed one's inside around(context). A streaming handler may be either style grpc.aio
    allows, an async generator yielding the responses or a coroutine writing them with context.write (the health
    service's Watch): the wrapper keeps the style, so that grpc.aio drives it the same way."""
    if handler.unary_unary or handler.stream_unary:
        make = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
        return make(unary(handler.unary_unary or handler.stream_unary),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)
    inner = handler.unary_stream or handler.stream_stream
    make_stream = (grpc.unary_stream_rpc_method_handler if handler.unary_stream
                   else grpc.stream_stream_rpc_method_handler)
    if inspect.isasyncgenfunction(inner):
        async def streamed(request: Any, context: Any) -> AsyncIterator[Any]:
            async with around(context):
                async for item in inner(request, context):
                    yield item

        return make_stream(streamed, request_deserializer=handler.request_deserializer,
                           response_serializer=handler.response_serializer)

    async def written(request: Any, context: Any) -> None:
        async with around(context):
            await inner(request, context)

    return make_stream(written, request_deserializer=handler.request_deserializer,
                       response_serializer=handler.response_serializer)
