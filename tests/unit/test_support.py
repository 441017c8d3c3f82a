"""The shared test helper eventually(): what it retries and what it lets through."""

from __future__ import annotations

import pytest

from tests.support import eventually


async def test_a_retried_error_is_not_yet_and_the_first_answer_after_it_is_returned() -> None:
    failures = [TimeoutError("busy"), TimeoutError("busy")]

    async def read() -> str:
        if failures:
            raise failures.pop()
        return "ready"

    assert await eventually(read, timeout=5, interval=0, retrying=(TimeoutError,)) == "ready"


async def test_an_error_not_named_is_raised_at_once() -> None:
    async def read() -> None:
        raise KeyError("broken")

    with pytest.raises(KeyError):
        await eventually(read, timeout=5, interval=0, retrying=(TimeoutError,))


async def test_at_the_deadline_the_last_retried_error_is_named() -> None:
    def read() -> None:
        raise TimeoutError("still electing")

    with pytest.raises(AssertionError, match="last error TimeoutError\\('still electing'\\)"):
        await eventually(read, timeout=0.05, interval=0.01, retrying=(TimeoutError,))
