"""rackflow's one retry policy for calls to other systems (BMCs, Airflow's own REST API): a fixed
number of attempts, a fixed wait between them, a warning per failed attempt, and the last error raised
as it was.

Built on tenacity; the blocking and the asyncio forms share the policy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_fixed,
)

T = TypeVar("T")


class _Log(Protocol):
    def warning(self, event: Any, *args: Any, **kw: Any) -> Any: ...


def _policy(
    *, attempts: int, delay: float, retry_on: Callable[[BaseException], bool], log: _Log, what: str
) -> dict[str, Any]:
    def warn(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        detail = (str(error) or type(error).__name__) if error is not None else "?"
        log.warning("%s failed (attempt %d of %d): %s", what, state.attempt_number, attempts, detail)

    return {
        "stop": stop_after_attempt(max(1, attempts)),
        "wait": wait_fixed(delay),
        "retry": retry_if_exception(retry_on),
        "before_sleep": warn,
        "reraise": True,
    }


def retry_blocking(
    fn: Callable[[], T],
    *,
    attempts: int,
    delay: float,
    retry_on: Callable[[BaseException], bool],
    log: _Log,
    what: str,
) -> T:
    """``fn()`` up to ``attempts`` times while its error satisfies ``retry_on``; the last error is raised."""
    return Retrying(**_policy(attempts=attempts, delay=delay, retry_on=retry_on, log=log, what=what))(fn)


async def retry_async(
    fn: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    delay: float,
    retry_on: Callable[[BaseException], bool],
    log: _Log,
    what: str,
) -> T:
    """:func:`retry_blocking` for a coroutine function, sleeping on the event loop between attempts."""
    policy = _policy(attempts=attempts, delay=delay, retry_on=retry_on, log=log, what=what)
    return await AsyncRetrying(**policy)(fn)
