"""What every tool result says about how it was made: the trace, and the records it is built from.

These are data, with no behaviour and no imports of ours, so that everything that writes a part of
the trace can import them pointing down: the router (attempts, usage), the per-call client handle
(`client_call`, which carries attempts and usage between the rounds of a 2026-07-28 call), the image
fitting (`image_fit`: one `ImageReport` per image) and the tools (whose results extend `Trace`).
Field names and descriptions are the tools' output schema (DESIGN.md: contract).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

AttemptOutcome = Literal["ok", "invalid_output", "error", "skipped"]


class Attempt(BaseModel):
    model_config = ConfigDict(defer_build=True)  # built on first use, not at start-up

    model: str
    provider: str
    outcome: AttemptOutcome = Field(description="ok, invalid_output, error, or skipped (circuit open, or over "
                                    "the budget: nothing was sent)")
    error: str | None = None  # the error's kind (e.g. `unavailable`, `invalid_output`), None when ok
    latency_ms: float
    host: str | None = Field(default=None, description="The host that was asked (its base URL, no credentials); "
                             "null when the provider is not at an address or the try was skipped.")
    host_reason: str | None = Field(default=None, description="Why that host, when the provider has several: "
                                    "where the model is loaded, calls in flight, recent latency, a host that "
                                    "failed before it; null for a provider at one host.")
    cost_usd: float | None = Field(default=0.0, description="What this try cost in US dollars, priced from the "
                                   "usage the provider reported; 0 when nothing was billed (skipped, refused, or "
                                   "a model configured as free); null when unknown (no price for the model, or "
                                   "an answer cut off whose usage was never reported).")


class Usage(BaseModel):
    model_config = ConfigDict(defer_build=True)  # built on first use, not at start-up

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = Field(default=0, description="Of input_tokens, those read from the provider's "
                                     "prompt cache (billed at its lower rate).")
    cache_write_tokens: int = Field(default=0, description="Of input_tokens, those written to the provider's "
                                    "prompt cache (billed at its higher rate).")
    thinking_tokens: int = Field(default=0, description="Of output_tokens, the model's reasoning that the answer "
                                 "does not show (billed as output).")


class ImageShape(BaseModel):
    model_config = ConfigDict(defer_build=True)  # built on first use, not at start-up

    width: int
    height: int
    bytes: int
    mime_type: str


class ImageReport(BaseModel):
    """What was sent for one image, next to what the caller passed, and the steps between."""
    model_config = ConfigDict(defer_build=True)  # built on first use, not at start-up


    provider: str
    original: ImageShape = Field(description="The image as the caller passed it.")
    sent: ImageShape = Field(description="The image as the provider received it.")
    steps: list[str] = Field(default_factory=list, description="What was done, in order; empty if nothing.")


class Trace(BaseModel):
    """The fields every tool result carries: who answered, how, and at what cost."""
    model_config = ConfigDict(defer_build=True)  # built on first use, not at start-up


    model: str = Field(description="The model that answered.")
    provider: str
    attempts: list[Attempt] = Field(description="Every try, in order, including failed ones.")
    usage: Usage = Field(description="Tokens over all attempts of this call.")
    latency_ms: float = Field(description="Wall time of the whole call.")
    schema_rewrites: list[str] = Field(
        default_factory=list, description="What was changed in the schema for the provider; empty if nothing."
    )
    argument_rewrites: list[str] = Field(
        default_factory=list, description="Arguments changed to fit the provider that answered (a temperature "
        "above its range lowered to its maximum); empty if nothing."
    )
    images: list[ImageReport] = Field(
        default_factory=list, description="Each image as passed and as sent to the model that answered, "
        "with what was done (rotated, scaled, re-encoded); empty without images."
    )
    cost_usd: float | None = Field(
        default=0.0, description="What this call cost in US dollars: the sum over its attempts (retries, re-asks "
        "and fallbacks included); null when any attempt's cost is unknown, never a guess; 0 for a cached answer."
    )
    cached: bool = Field(default=False, description="True when the answer came from the response cache "
                         "(temperature 0, identical arguments): nothing was sent, and attempts is empty.")
