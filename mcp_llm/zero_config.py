"""A sensible model when none is given and none is configured, so the server works the moment it is added.

In order: the MCP client's own model when the client can sample; else the first suitable model a
reachable Ollama reports (a vision-capable one for images, from `/api/show`); else an error that
names both ways out. What Ollama reported is kept briefly, so each call does not ask again.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import anyio

from mcp_llm.errors import LLMError, UnknownModelError

if TYPE_CHECKING:
    from mcp_llm.adapters.sampling import ClientCall
    from mcp_llm.registry import Registry

log = logging.getLogger("mcp_llm")

PICK_CACHE_S = 30.0  # a found model is kept this long
MISS_CACHE_S = 3.0  # "no Ollama" is asked again this soon: it may have just been started
LOOKUP_TIMEOUT_S = 5.0


class DefaultPicker:
    """Chooses the model for a call that names none, with nothing configured."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._ollama: dict[bool, tuple[float, str | None]] = {}

    async def pick(self, *, vision: bool, client: ClientCall | None) -> str:
        if client is not None and client.can_sample:
            return "client"
        found = await self._ollama_model(vision)
        if found:
            return found
        endpoint = self.registry.settings.providers.ollama.effective_endpoint
        kind = "vision model" if vision else "model"
        why = client.why_not if client is not None else "there is no MCP client here to sample"
        why = why[:1].lower() + why[1:].rstrip(".")
        raise UnknownModelError(
            f"No model was given and none is configured, and none could be chosen: {why}, "
            f"and no Ollama {kind} was found at {endpoint}.",
            hint="Pass `model`, or set defaults.model in the config file, or use an MCP client that supports "
            f"sampling; or start Ollama (`ollama serve`) and pull a {kind} (`ollama pull <name>`).",
        )

    async def _ollama_model(self, vision: bool) -> str | None:
        cached = self._ollama.get(vision)
        if cached is not None:
            age, found = time.monotonic() - cached[0], cached[1]
            if age < (PICK_CACHE_S if found else MISS_CACHE_S):
                return found
        found = None
        with anyio.move_on_after(LOOKUP_TIMEOUT_S):
            try:
                adapter = await self.registry.ready_adapter("ollama")
                models = await adapter.list_models()
            except LLMError as exc:
                log.info("no default model from Ollama: %s", exc.message)
            else:
                self.registry.remember_discovered(m.id for m in models)
                found = next((m.id for m in models if m.structured and (m.vision or not vision)), None)
        self._ollama[vision] = (time.monotonic(), found)
        if found:
            log.info("no model configured: using %s", found)
        return found
