"""The errors mcp_llm raises, and the only ones `server.py` turns into tool errors.

```
LLMError                      every failure we anticipate; .hint says what to do
├── ConfigError               the config file or an environment value is wrong
├── InputError                the caller's arguments cannot be used (never retried)
│   ├── ArgumentError         a number outside every provider's domain (temperature, max_tokens, timeout_s)
│   ├── SchemaError           not a valid JSON Schema, or an unknown preset name
│   ├── ImageError            missing, outside the allowed roots, not an image, too large
│   └── UnknownModelError     no provider prefix, alias or default matches the id
├── ProviderError             the provider could not give an answer (.provider, .model)
│   ├── ProviderNotReady      known prefix, but its adapter is not in this version / not configured
│   ├── AuthError             401/403: the key is missing or wrong
│   ├── ModelNotFoundError    404: the provider does not have that model
│   ├── BadRequestError       400/413/422: the provider refused the request as sent
│   ├── CircuitOpenError      skipped: the provider failed too often in a row, cooling down
│   ├── BudgetExceeded        skipped: at worst the attempt could cost more than the budget has left
│   ├── SamplingDeclined      the MCP client refused or failed a sampling request (never retried)
│   ├── NotSentError          our side could not build or encode the request: nothing reached the
│   │                         provider, so it is never retried and never counts against its circuit
│   └── TransientError        worth retrying (.retryable is True)
│       ├── ProviderUnavailable   connection refused or reset, DNS
│       ├── ProviderTimeout       no answer within the timeout
│       ├── RateLimitedError      429 (.retry_after seconds, when the provider said)
│       └── ProviderServerError   5xx, 529, or a malformed reply
├── OutputError               the model's answer does not match the schema
│   └── NotJSONError          no JSON at all: prose (a model that ignored the schema), or cut off
└── AllAttemptsFailed         every model of the chain failed (.attempts lists what each got)
```

Adapters translate their SDK's exceptions into these where the SDK is called; the router
retries `TransientError`s and re-asks on `OutputError`; nothing in between catches broadly.
Only a `TransientError` counts against a provider's circuit, and only once the request has gone
out: what fails on our side first is a `NotSentError` (see `adapters/_errors.translated`).

Text a caller sent (a model id, a provider name) is echoed in messages through `clip()`, so a
1 MB id makes a short error, not a 1 MB one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CLIP_CHARS = 80


def clip(text: str, limit: int = CLIP_CHARS) -> str:
    """`text` quoted for an error message, cut to `limit` characters with its full length said:
    `'aaaa…' (1,048,576 characters)`."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[: limit - 1] + '…'!r} ({len(text):,} characters)"


class LLMError(Exception):
    """Base of every error we anticipate. `str()` is the cause; `hint` is what the user can do."""

    retryable: bool = False
    kind: str = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def user_message(self) -> str:
        """The text a user sees: cause, then what to do."""
        return f"{self.message} {self.hint}" if self.hint else self.message


class ConfigError(LLMError):
    kind = "config"


class InputError(LLMError):
    kind = "input"


class ArgumentError(InputError):
    """Found at the tool boundary (`tools.check_arguments`), before any model is chosen: on the
    command line, a usage error (exit 2) rather than a failed call."""


class SchemaError(InputError):
    kind = "schema"


class ImageError(InputError):
    kind = "image"


class UnknownModelError(InputError):
    kind = "unknown_model"


class ProviderError(LLMError):
    """A provider failed; carries which one so the trace and the final error can say so."""

    kind = "provider"

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        model: str | None = None,
        status: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.provider = provider
        self.model = model
        self.status = status
        # The answer the provider gave and billed, refused on this side (cut off at max_tokens, blocked): an
        # `adapters.base.Completion` whose usage prices the attempt (cost.py). None: no answer came.
        self.answered: Any = None


class ProviderNotReady(ProviderError):
    kind = "not_ready"


class AuthError(ProviderError):
    kind = "auth"


class ModelNotFoundError(ProviderError):
    kind = "model_not_found"


class BadRequestError(ProviderError):
    kind = "bad_request"


class CircuitOpenError(ProviderError):
    kind = "circuit_open"


class BudgetExceeded(ProviderError):
    """Not sent: the attempt's worst case (its prompt's tokens, bounded, and its max_tokens, at the model's
    price) is over what the call's or the day's budget has left, or its price is unknown (`would_cost`
    None). The chain moves on, to a cheaper model if one is configured."""

    kind = "budget_exceeded"

    def __init__(self, message: str, *, would_cost: float | None, left: float, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.would_cost = would_cost
        self.left = left


class NotSentError(ProviderError):
    """The request could not be built or encoded on our side (a value JSON cannot carry, text that
    is not valid Unicode, a bug of ours): nothing was sent, so the provider is not to blame."""

    kind = "not_sent"


class SamplingDeclined(ProviderError):
    """The MCP client said no to `sampling/createMessage` (its user declined, or it cannot sample)."""

    kind = "declined"


class TransientError(ProviderError):
    retryable = True
    kind = "transient"


class ProviderUnavailable(TransientError):
    kind = "unavailable"


class ProviderTimeout(TransientError):
    kind = "timeout"


class RateLimitedError(TransientError):
    kind = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ProviderServerError(TransientError):
    kind = "server_error"


class OutputError(LLMError):
    """The model answered, but not with JSON that validates against the caller's schema."""

    kind = "invalid_output"

    def __init__(self, message: str, *, errors: Sequence[str] = (), reply: str = "") -> None:
        super().__init__(message)
        self.errors = list(errors)
        self.reply = reply


class NotJSONError(OutputError):
    """The answer holds no JSON: typically prose from a model (or Ollama build) that ignored the schema."""

    kind = "not_json"


class AllAttemptsFailed(LLMError):
    """Every model of the chain failed; the message lists each attempt's error."""

    kind = "all_failed"

    def __init__(self, message: str, *, attempts: Sequence[Any], last: LLMError, hint: str | None) -> None:
        super().__init__(message, hint=hint)
        self.attempts = list(attempts)
        self.last = last
