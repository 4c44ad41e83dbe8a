"""What every adapter's error translation shares: HTTP status → our class, transport failures.

Each adapter still decides, at its SDK call site, which of its SDK's exceptions carry a status
and what to tell the user; these helpers keep the status table and the httpx/httpx2 transport
mapping in one place. (google-genai and mcp use `httpx2`, a fork of httpx under its own import
name whose classes are not httpx's; the ollama SDK uses httpx.)

An error is only the provider's once the request has gone out. Every adapter's HTTP client carries
`mark_sent` as its `request` event hook (httpx and httpx2 run it when the request, already built and
encoded, is handed to the transport); what fails before that — a value JSON cannot carry, text
that is not valid Unicode, a bug of ours — leaves `translated` as a `NotSentError`, never as a
`TransientError`, so it is neither retried nor counted against the provider's circuit (one caller's
NaN temperature must not get a provider skipped for everyone).
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from mcp_llm.errors import (
    AuthError,
    BadRequestError,
    ModelNotFoundError,
    NotSentError,
    ProviderError,
    ProviderServerError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimitedError,
)
from mcp_llm.words import words

log = logging.getLogger("mcp_llm")

TRANSIENT_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})

# Whether the request of the `translated` block running in this task has reached the transport.
# httpx runs event hooks in the task that sends, so a ContextVar keeps concurrent calls apart.
_sent: ContextVar[bool] = ContextVar("mcp_llm_request_sent", default=False)


async def mark_sent(_request: Any) -> None:
    """The `request` event hook of every adapter's httpx / httpx2 client: the request goes out now."""
    _sent.set(True)


EVENT_HOOKS: dict[str, list[Callable[..., Any]]] = {"request": [mark_sent]}


def hook_into(http_client: Any) -> None:
    """Add `mark_sent` to an httpx / httpx2 client an SDK built for itself (its `event_hooks` are public)."""
    http_client.event_hooks["request"].append(mark_sent)


@contextmanager
def translated(translate: Callable[[Exception], ProviderError | None], *, where: str, provider: str,
               model: str | None) -> Iterator[None]:
    """Around an SDK call: its exceptions leave as ours; anything `translate` does not know, as is.

    A failure before the request reached the transport is ours, not the provider's: one that
    `translate` would call transient (a ValueError from encoding the body reads like a malformed
    reply), or does not know at all, leaves as a `NotSentError` instead, with its traceback logged.
    What `translate` maps to a lasting error (missing credentials, say) is kept as it is.
    """
    token = _sent.set(False)
    try:
        yield
    except ProviderError:
        raise
    except Exception as exc:
        mapped = translate(exc)
        if (mapped is None or mapped.retryable) and not _sent.get():
            log.warning("a request to %s could not be sent", where, exc_info=exc)
            detail = str(exc)
            detail = detail if len(detail) <= 200 else detail[:199] + "…"
            mapped = NotSentError(
                f"The request to {where} could not be sent ({type(exc).__name__}: {detail}); nothing reached "
                "the provider, and this does not count against it.",
                provider=provider, model=model,
                hint="Check the arguments for values JSON cannot carry or text that is not valid Unicode "
                "(a lone surrogate); if they look right, report it with the server's log.",
            )
        if mapped is None:
            raise
        raise mapped from exc
    finally:
        _sent.reset(token)


def error_for_status(
    status: int,
    message: str,
    *,
    provider: str,
    model: str | None,
    hint: str | None = None,
    retry_after: float | None = None,
) -> ProviderError:
    """The error class a provider's HTTP status means: retryable for 408/409/429/5xx/529."""
    common: dict[str, Any] = {"provider": provider, "model": model, "status": status, "hint": hint}
    if status in (401, 403):
        return AuthError(message, **common)
    if status == 404:
        return ModelNotFoundError(message, **common)
    if status == 429:
        if retry_after is not None:
            common["message"] = f"{message} (it asked to wait {retry_after:.0f} s)"
        common["hint"] = hint or "Try again later, or configure a fallback model (defaults.fallback)."
        return RateLimitedError(common.pop("message", message), retry_after=retry_after, **common)
    if status in TRANSIENT_STATUSES or status >= 500:
        return ProviderServerError(message, **common)
    return BadRequestError(message, **common)


def cut_off_error(where: str, *, provider: str, model: str, max_tokens: int | None,
                  answered: Any) -> BadRequestError:
    """A JSON answer the provider stopped at the max_tokens limit: an error, never a prefix handed on that
    might still parse (a number, say); `answered` (the Completion) keeps its usage, billed all the same."""
    error = BadRequestError(
        f"{where}: the answer was cut off at the {words().max_tokens} limit ({max_tokens or 'default'}) "
        f"before the JSON was complete.", provider=provider, model=model,
        hint=f"Raise {words().max_tokens}, or ask for less (a smaller schema, shorter strings).")
    error.answered = answered
    return error


def timeout_error(where: str, *, provider: str, model: str | None, cause: str = "") -> ProviderTimeout:
    return ProviderTimeout(
        f"{where} did not answer in time{f' ({cause})' if cause else ''}.",
        provider=provider,
        model=model,
        hint="Try again; raise defaults.timeout_s if the model is slow to load or answer.",
    )


def unavailable_error(where: str, *, provider: str, model: str | None, hint: str,
                      cause: str = "") -> ProviderUnavailable:
    return ProviderUnavailable(f"Cannot reach {where}{f' ({cause})' if cause else ''}.", provider=provider,
                               model=model, hint=hint)


def transport_error(exc: BaseException, *, provider: str, model: str | None, where: str,
                    down_hint: str) -> ProviderError | None:
    """httpx / httpx2 failures → ProviderTimeout / ProviderUnavailable (a timeout, a transport failure, a
    redirect loop), ProviderServerError (a body that cannot be decoded), the status's error (an
    `HTTPStatusError`); None for anything else (what fails before a request is sent, such as an
    `InvalidURL`, is left to `translated`). tests/test_provider_errors.py walks both modules' classes."""
    for module_name in ("httpx", "httpx2"):
        try:
            module = __import__(module_name)
        except ImportError:  # pragma: no cover - both ship with our dependencies
            continue
        if isinstance(exc, module.TimeoutException):
            return timeout_error(where, provider=provider, model=model, cause=type(exc).__name__)
        if isinstance(exc, module.TransportError):
            return unavailable_error(where, provider=provider, model=model, hint=down_hint,
                                     cause=type(exc).__name__)
        if isinstance(exc, module.DecodingError):
            return ProviderServerError(f"{where} sent a body that cannot be decoded: {exc}.", provider=provider,
                                       model=model)
        if isinstance(exc, module.RequestError):  # TooManyRedirects: the endpoint does not lead to the API
            return unavailable_error(where, provider=provider, model=model, hint=down_hint,
                                     cause=type(exc).__name__)
        if isinstance(exc, module.HTTPStatusError):
            status = exc.response.status_code
            return error_for_status(status, f"{where} answered {status}: {exc}", provider=provider, model=model)
    if isinstance(exc, TimeoutError):
        return timeout_error(where, provider=provider, model=model)
    if isinstance(exc, ConnectionError):
        return unavailable_error(where, provider=provider, model=model, hint=down_hint)
    return None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
