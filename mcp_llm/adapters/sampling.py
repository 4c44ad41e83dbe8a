"""The MCP client's own model, through `sampling/createMessage`: ids `client` and `client/<hint>`.

Only the adapter lives here: it turns a `Request` into `CreateMessageRequestParams` and the
client's answer into a `Completion`. How the request reaches the client (mid-call on 2025-11-25,
as an input request on 2026-07-28, resumed between rounds) is the per-call handle's business:
`mcp_llm/client_call.py`, which the router puts on the `Request` as `request.client`.
"""

from __future__ import annotations

import base64
from typing import Any

from mcp_types import (
    CreateMessageRequestParams,
    ImageContent,
    ModelHint,
    ModelPreferences,
    SamplingMessage,
    TextContent,
)
from pydantic import Field

from mcp_llm.adapters.base import Capabilities, Completion, Health, LLMAdapter, ModelInfo, Request, Timeouts
from mcp_llm.adapters.spec import Prefix, ProviderSection, ProviderSpec
from mcp_llm.client_call import NO_CLIENT, PROVIDER, ClientCall, no_sampling_hint
from mcp_llm.errors import BadRequestError, ProviderNotReady
from mcp_llm.words import words

__all__ = ["PROVIDER", "SPEC", "ClientSettings", "SamplingAdapter", "client_health", "client_model"]


class ClientSettings(ProviderSection):
    """`[providers.client]`: the MCP client's own model, through sampling: what to ask the client for."""

    as_fallback: bool = False
    hints: list[str] = Field(default_factory=list)
    cost_priority: float | None = Field(default=None, ge=0, le=1)
    speed_priority: float | None = Field(default=None, ge=0, le=1)
    intelligence_priority: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int = Field(default=4096, ge=1)  # sampling needs one; a call's max_tokens wins


class SamplingAdapter(LLMAdapter):
    """Speaks `sampling/createMessage` through the call's `ClientCall`; the schema goes in the prompt."""

    provider = PROVIDER
    capabilities = Capabilities(native_schema=False, images=True)

    def __init__(self, settings: ClientSettings) -> None:
        self._settings = settings

    async def complete(self, request: Request) -> Completion:
        handle = request.client
        if handle is None:
            raise ProviderNotReady(NO_CLIENT, provider=PROVIDER,
                                   hint=f"Use another model from {words().list_models} here.")
        result = await handle.sample(self.params(request))
        if not isinstance(result.content, TextContent):
            raise BadRequestError(
                f"The client's model answered with {result.content.type} content, not text.",
                provider=PROVIDER, model=request.model or None, hint=f"Use another model ({words().list_models}).",
            )
        reported = f"{PROVIDER}/{result.model}" if result.model else None
        return Completion(text=result.content.text, finish_reason=result.stop_reason, model=reported)

    def params(self, request: Request) -> CreateMessageRequestParams:
        settings = self._settings
        messages = []
        for message in request.messages:
            blocks: list[Any] = [
                ImageContent(data=base64.b64encode(image.data).decode(), mime_type=image.mime_type)
                for image in message.images
            ]
            blocks.append(TextContent(text=message.content))
            messages.append(SamplingMessage(role=message.role, content=blocks[0] if len(blocks) == 1 else blocks))
        hints = [ModelHint(name=name) for name in dict.fromkeys([request.model, *settings.hints]) if name]
        priorities = {"cost_priority": settings.cost_priority, "speed_priority": settings.speed_priority,
                      "intelligence_priority": settings.intelligence_priority}
        preferences = None
        if hints or any(value is not None for value in priorities.values()):
            preferences = ModelPreferences(hints=hints or None, **priorities)
        return CreateMessageRequestParams(
            messages=messages,
            system_prompt=request.system,
            temperature=request.temperature,
            max_tokens=request.max_tokens or settings.max_tokens,
            model_preferences=preferences,
        )

    async def list_models(self) -> list[ModelInfo]:
        return []  # per session: see `client_model`

    async def health(self) -> Health:
        return client_health(None)


def client_model(handle: ClientCall | None) -> ModelInfo:
    """`client` as `list_models` shows it to this caller: available only if its client can sample."""
    can = handle is not None and handle.can_sample
    label = "the MCP client's own model (sampling)"
    if not can:
        label += " — not available: " + (handle.why_not if handle else NO_CLIENT)
    return ModelInfo(id=PROVIDER, provider=PROVIDER, label=label, vision=can, structured=True,
                     enabled=True, available=can, source="discovered")


def client_health(handle: ClientCall | None) -> Health:
    """Whether this caller's client can sample, from its declared capabilities: it never samples."""
    if handle is None or not handle.can_sample:
        why = handle.why_not if handle else NO_CLIENT
        return Health(provider=PROVIDER, status="unconfigured", detail=f"{why} {no_sampling_hint()}")
    generation = "input requests (2026-07-28)" if handle.modern else "mid-call requests (2025-11-25)"
    name = f"{handle.client_name} " if handle.client_name else ""
    return Health(provider=PROVIDER, status="ok",
                  detail=f"The client {name}declared sampling; requests go as {generation}, and it may "
                  "ask its user before each one.")


def _build(settings: ClientSettings, timeouts: Timeouts, name: str) -> SamplingAdapter:
    return SamplingAdapter(settings)  # the client's deadline is the call's: no timeouts of its own


SPEC = ProviderSpec(
    name=PROVIDER,
    label="the MCP client's own model (sampling)",
    settings=ClientSettings,
    build=_build,
    prefixes=(Prefix("client/"),),
    ids=(PROVIDER,),
    secrets=(),
    hosts=lambda settings: [],  # reached through the call, not at an address
    call_health=client_health,
    call_models=lambda handle: [client_model(handle)],
)
