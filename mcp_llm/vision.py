"""Which model may be sent an image: routing's check, before anything is sent.

A model known not to read images is refused before its provider sees the image: the call fails
over to the next model of the chain (the refusal is a non-retryable error of that provider), and
when none can, the error names a model that can. What a model can do is known from the config
first (a model's own `vision = true/false` is the user's word), then from its provider (Ollama's
`/api/show` capabilities); when neither can say, the image is sent and the provider judges.

How an image is made to fit a provider's limits is a different question, of pixels: `image_fit`.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import anyio

from mcp_llm.errors import BadRequestError, LLMError
from mcp_llm.words import words

if TYPE_CHECKING:
    from mcp_llm.adapters.base import LLMAdapter
    from mcp_llm.registry import Registry, Route

VISION_CHECK_TIMEOUT_S = 10.0


async def check_vision(registry: Registry, adapter: LLMAdapter, route: Route) -> None:
    """Refuse `route` for an image: its provider takes none, or the model itself cannot read one.

    A configured model's own `vision` flag when it sets one, else what the provider says."""
    if not adapter.capabilities.images:
        raise BadRequestError(f"{route.provider} does not take images.", provider=route.provider,
                              model=route.model_id, hint=await _vision_hint(registry, adapter, route))
    entry = registry.configured_entry(route.model_id)
    if entry is not None and "vision" in entry.model_fields_set:
        vision: bool | None = entry.vision
        why = "vision = false in the config file"
    else:
        vision = None
        with anyio.move_on_after(VISION_CHECK_TIMEOUT_S):
            vision = await adapter.supports_images(route.native)
        why = "the provider does not list vision among its capabilities"
    if vision is False:
        raise BadRequestError(f"{route.model_id} cannot read images ({why}).", provider=route.provider,
                              model=route.model_id, hint=await _vision_hint(registry, adapter, route))


async def _vision_hint(registry: Registry, adapter: LLMAdapter, route: Route) -> str:
    """Name a model that can read images: the configured vision default, a configured vision model,
    or one the provider lists with vision."""
    candidates = [registry.settings.defaults.vision_model]
    candidates += [e.id for e in registry.configured_models() if e.enabled and e.vision]
    if not any(c and c != route.model_id for c in candidates):
        with anyio.move_on_after(VISION_CHECK_TIMEOUT_S):
            with contextlib.suppress(LLMError):
                candidates += [m.id for m in await adapter.list_models() if m.vision]
    name = next((c for c in candidates if c and c != route.model_id), None)
    if name:
        return f"Use a vision model such as {name!r} ({words().list_models} shows vision: true for each)."
    return f"Use a vision model ({words().list_models} shows vision: true), or set defaults.vision_model."
