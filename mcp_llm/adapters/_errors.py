"""What every adapter's error translation shares: HTTP status → our class, transport failures.

Each adapter still decides, at its SDK call site, which of its SDK's exceptions carry a status
and what to tell the user; these helpers keep the status table and the httpx/httpx2 transport
mapping in one place. (google-genai and mcp use `httpx2`, a fork of httpx under its own import
name whose classes are not httpx's; the ollama SDK uses httpx.)
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from mcp_llm.errors import (
    AuthError,
    BadRequestError,
    ModelNotFoundError,
    ProviderError,
    ProviderServerError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimitedError,
)

TRANSIENT_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


@contextmanager
def translated(translate: Callable[[Exception], ProviderError | None]) -> Iterator[None]:
    """Around an SDK call: its exceptions leave as ours; anything `translate` does not know, as is."""
    try:
        yield
    except ProviderError:
        raise
    except Exception as exc:
        mapped = translate(exc)
        if mapped is None:
            raise
        raise mapped from exc


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
    """httpx / httpx2 transport failures → ProviderTimeout / ProviderUnavailable; None for anything else."""
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
