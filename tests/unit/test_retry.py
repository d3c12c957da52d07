"""The retry layer: what is retried, how long it waits, when it gives up."""

from __future__ import annotations

import asyncio
import email.utils
import time
from typing import Any

import httpx
import httpx2
import openai
import pytest

from tests.fakeclock import FakeClock
from ttc_graph.endpoints.retry import RetryConfig, call_with_retries, is_retryable, retry_after_seconds
from ttc_graph.errors import EndpointError

FAST = RetryConfig(max_attempts=4, initial_backoff=0, jitter=0, max_backoff=0.01)


def api_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://mock.test/v1/chat/completions")
    response = httpx2.Response(status, headers=headers or {}, request=request, json={"error": {"message": "x"}})
    return openai.APIStatusError(f"Error code: {status}", response=response, body=None)


def httpx_error(status: int, headers: dict[str, str] | None = None) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "http://mock.test/props")
    response = httpx.Response(status, headers=headers or {}, request=request)
    return httpx.HTTPStatusError(f"HTTP {status}", request=request, response=response)


class Flaky:
    """An async callable failing with ``errors`` (in order), then returning ``value``; counts attempts."""

    def __init__(self, *errors: BaseException, value: str = "ok") -> None:
        self.errors = list(errors)
        self.value = value
        self.attempts = 0

    async def __call__(self) -> str:
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.value


@pytest.fixture()
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The seconds of every ``asyncio.sleep`` (the retry layer's waits), none of them slept."""
    waits: list[float] = []
    real = asyncio.sleep

    async def sleep(seconds: float, *args: Any, **kwargs: Any) -> Any:
        waits.append(seconds)
        return await real(0, *args, **kwargs)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return waits


# -- is_retryable --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
@pytest.mark.parametrize("make", [api_error, httpx_error])
def test_transient_statuses_are_retryable(status: int, make):
    assert is_retryable(make(status)) is True


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
@pytest.mark.parametrize("make", [api_error, httpx_error])
def test_client_errors_are_not_retryable(status: int, make):
    assert is_retryable(make(status)) is False


def test_timeouts_and_connection_errors_are_retryable():
    request2 = httpx2.Request("POST", "http://mock.test/v1/chat/completions")
    request = httpx.Request("GET", "http://mock.test/")
    assert is_retryable(openai.APITimeoutError(request=request2))
    assert is_retryable(openai.APIConnectionError(request=request2))
    assert is_retryable(httpx.ReadTimeout("slow", request=request))
    assert is_retryable(httpx.ConnectError("refused", request=request))
    assert is_retryable(TimeoutError())
    assert is_retryable(ConnectionResetError())


def test_endpoint_errors_carry_their_own_retryability_and_others_are_not_retried():
    assert is_retryable(EndpointError("x", status_code=503, retryable=True))
    assert not is_retryable(EndpointError("x", status_code=503, retryable=False))
    assert not is_retryable(ValueError("bug"))
    assert not is_retryable(KeyError("bug"))


# -- retry_after_seconds ----------------------------------------------------------------------------------------


def test_retry_after_in_seconds():
    assert retry_after_seconds(api_error(429, {"retry-after": "2"})) == 2.0
    assert retry_after_seconds(httpx_error(503, {"Retry-After": "1.5"})) == 1.5


def test_retry_after_ms_wins():
    assert retry_after_seconds(api_error(429, {"retry-after-ms": "250", "retry-after": "9"})) == 0.25


def test_retry_after_http_date(monkeypatch: pytest.MonkeyPatch):
    clock = FakeClock(start=1_700_000_000.0).install(monkeypatch, ["ttc_graph.endpoints.retry"])
    exc = api_error(503, {"retry-after": email.utils.formatdate(clock.now + 30, usegmt=True)})
    assert retry_after_seconds(exc) == 30.0


def test_retry_after_in_the_past_or_negative_is_zero():
    past = email.utils.formatdate(time.time() - 3600, usegmt=True)
    assert retry_after_seconds(api_error(503, {"retry-after": past})) == 0.0
    assert retry_after_seconds(api_error(503, {"retry-after": "-5"})) == 0.0


def test_no_or_unusable_retry_after_is_none():
    assert retry_after_seconds(api_error(503)) is None
    assert retry_after_seconds(api_error(503, {"retry-after": "soon"})) is None
    assert retry_after_seconds(ValueError("no headers")) is None
    assert retry_after_seconds(EndpointError("x", status_code=429)) is None


# -- call_with_retries -------------------------------------------------------------------------------------------


async def test_retries_a_503_then_succeeds():
    fn = Flaky(api_error(503), api_error(503))
    assert await call_with_retries(fn, FAST, "test call") == "ok"
    assert fn.attempts == 3


async def test_never_retries_a_400():
    fn = Flaky(api_error(400))
    with pytest.raises(EndpointError) as info:
        await call_with_retries(fn, FAST, "test call")
    assert fn.attempts == 1
    assert info.value.status_code == 400
    assert info.value.retryable is False
    assert "test call" in str(info.value)
    assert isinstance(info.value.__cause__, openai.APIStatusError)


async def test_gives_up_after_max_attempts():
    config = RetryConfig(max_attempts=3, initial_backoff=0, jitter=0, max_backoff=0.01)
    fn = Flaky(*(api_error(503) for _ in range(10)))
    with pytest.raises(EndpointError) as info:
        await call_with_retries(fn, config, "test call")
    assert fn.attempts == config.max_attempts
    assert info.value.status_code == 503
    assert info.value.retryable is True


async def test_max_attempts_one_means_no_retry():
    fn = Flaky(api_error(503))
    with pytest.raises(EndpointError):
        await call_with_retries(fn, RetryConfig(max_attempts=1), "test call")
    assert fn.attempts == 1


async def test_honours_retry_after(sleeps: list[float]):
    config = RetryConfig(max_attempts=2, initial_backoff=0, jitter=0, max_backoff=5)
    fn = Flaky(api_error(429, {"retry-after": "0.05"}))
    assert await call_with_retries(fn, config, "test call") == "ok"
    assert fn.attempts == 2
    assert sleeps == [0.05]  # the wait the server asked for, not the (zero) backoff


async def test_retry_after_is_capped_by_max_backoff(sleeps: list[float]):
    config = RetryConfig(max_attempts=2, initial_backoff=0, jitter=0, max_backoff=0.01)
    fn = Flaky(api_error(429, {"retry-after": "60"}))
    assert await call_with_retries(fn, config, "test call") == "ok"
    assert fn.attempts == 2
    assert sleeps == [0.01]  # not the 60 s asked for


async def test_unparsable_retry_after_still_retries():
    fn = Flaky(api_error(503, {"retry-after": "whenever"}))
    assert await call_with_retries(fn, FAST, "test call") == "ok"
    assert fn.attempts == 2


async def test_a_non_http_bug_is_wrapped_and_not_retried():
    fn = Flaky(ValueError("bad json"))
    with pytest.raises(EndpointError, match="ValueError") as info:
        await call_with_retries(fn, FAST, "test call")
    assert fn.attempts == 1
    assert info.value.status_code is None


async def test_timeouts_are_retried():
    request2 = httpx2.Request("POST", "http://mock.test/v1/chat/completions")
    fn = Flaky(openai.APITimeoutError(request=request2), TimeoutError())
    assert await call_with_retries(fn, FAST, "test call") == "ok"
    assert fn.attempts == 3


def test_retry_config_validation():
    with pytest.raises(ValueError):
        RetryConfig(max_attempts=0)
    with pytest.raises(ValueError):
        RetryConfig(initial_backoff=-1)
