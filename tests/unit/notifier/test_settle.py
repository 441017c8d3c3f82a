"""outcome() and the shared settling: every outcome of handling one message becomes an ack, a nak or a term,
and none of them, nor a failed acknowledgement, escapes into the consumer loop (which would stop the whole
notifier)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from nats.errors import ConnectionClosedError

from cmlmon_core.consuming import judge, settle
from cmlmon_core.messages import UndecodableMessage
from notifier.entrypoints.consumers import RETRY_DELAY, outcome
from notifier.errors import StoreUnavailable


class FakeMsg:
    subject = "cml.metrics.us-east-1.w-1"

    def __init__(self, fail_reply: bool = False) -> None:
        self.replies: list[tuple[str, float | None]] = []
        self._fail = fail_reply

    async def _reply(self, kind: str, delay: float | None = None) -> None:
        self.replies.append((kind, delay))
        if self._fail:
            raise ConnectionClosedError

    async def ack(self) -> None:
        await self._reply("ack")

    async def nak(self, delay: float | None = None) -> None:
        await self._reply("nak", delay)

    async def term(self) -> None:
        await self._reply("term")


def raising(exc: Exception | None) -> Callable[[], Awaitable[None]]:
    async def handle() -> None:
        if exc is not None:
            raise exc
    return handle


async def handle_and_settle(msg: FakeMsg, exc: Exception | None) -> None:
    """What the notifier's consumers do with one message whose handling ends with exc."""
    verdict = await judge(lambda m: outcome(m, "CML_METRICS", raising(exc)), msg, RETRY_DELAY)  # type: ignore[arg-type]
    await settle(msg, verdict)  # type: ignore[arg-type]


@pytest.mark.parametrize(("exc", "reply"), [
    (None, ("ack", None)),
    (UndecodableMessage("junk"), ("term", None)),
    (StoreUnavailable("kv down"), ("nak", RETRY_DELAY)),
    (KeyError("a bug"), ("nak", RETRY_DELAY)),  # redelivered later, the consumer carries on
])
async def test_each_outcome_is_one_reply(exc: Exception | None, reply: tuple[str, float | None]) -> None:
    msg = FakeMsg()
    await handle_and_settle(msg, exc)
    assert msg.replies == [reply]


@pytest.mark.parametrize("exc", [None, UndecodableMessage("junk"), StoreUnavailable("kv down"), KeyError("bug")])
async def test_a_failed_reply_does_not_escape(exc: Exception | None) -> None:
    msg = FakeMsg(fail_reply=True)
    await handle_and_settle(msg, exc)
    assert len(msg.replies) == 1
