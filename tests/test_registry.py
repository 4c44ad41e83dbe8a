"""Model id → provider and native name: the prefixes of DESIGN.md, aliases, defaults, and the errors.

Settings come from TOML snippets through `load_settings` (the `make_settings` fixture); no
network: building an adapter does no I/O, and the providers without one say so.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mcp_llm.adapters.ollama import OllamaAdapter
from mcp_llm.config import Settings
from mcp_llm.errors import UnknownModelError
from mcp_llm.registry import Registry, Route, full_id

MakeRegistry = Callable[..., Registry]

CONFIG = """
[providers.ollama]
endpoint = "http://127.0.0.1:9"

[[providers.ollama.models]]
id = "llama3.2:3b"

[[providers.ollama.models]]
id = "llava:7b"
vision = true

[[providers.ollama.models]]
id = "ollama/qwen2.5:7b"

[[providers.ollama.models]]
id = "old-model:1b"
enabled = false

[[providers.gemini.models]]
id = "gemini-2.5-flash"

[providers.openai_compatible.lmstudio]
endpoint = "http://127.0.0.1:1234/v1"
"""


@pytest.fixture
def make_registry(make_settings: Callable[..., Settings]) -> MakeRegistry:
    def make(toml: str = CONFIG, env: dict[str, str] | None = None) -> Registry:
        return Registry(make_settings(toml, env))

    return make


@pytest.fixture
def registry(make_registry: MakeRegistry) -> Registry:
    return make_registry()


# --- prefixes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "provider", "native", "vertex"),
    [
        ("ollama/llama3.2:3b", "ollama", "llama3.2:3b", False),
        ("ollama/hf.co/x/y:q4", "ollama", "hf.co/x/y:q4", False),  # split on the first `/` only
        ("ollama/not-configured:1b", "ollama", "not-configured:1b", False),  # Ollama's names are open
        ("gemini-2.5-flash", "gemini", "gemini-2.5-flash", False),
        ("gemini/x", "gemini", "x", False),
        ("gemini/models/x", "gemini", "models/x", False),
        ("vertex/x", "gemini", "x", True),
        ("claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5", False),
        ("anthropic/x", "anthropic", "x", False),
        ("openai/x", "openai", "x", False),
        ("openai/gpt-4o-mini", "openai", "gpt-4o-mini", False),
        ("client", "client", "", False),
        ("client/hint", "client", "hint", False),
        ("lmstudio/qwen", "lmstudio", "qwen", False),
        ("lmstudio/org/qwen:7b", "lmstudio", "org/qwen:7b", False),
    ],
)
def test_prefix_resolves_to_provider_and_native_name(
    registry: Registry, model_id: str, provider: str, native: str, vertex: bool
) -> None:
    assert registry.resolve(model_id) == Route(model_id, provider, native, options={"vertex": True} if vertex else {})


@pytest.mark.parametrize("model_id", ["ollama/", "gemini/", "vertex/", "anthropic/", "openai/", "lmstudio/"])
def test_a_prefix_alone_is_not_a_model(registry: Registry, model_id: str) -> None:
    with pytest.raises(UnknownModelError) as caught:
        registry.resolve(model_id)
    assert repr(model_id) in str(caught.value)


def test_unconfigured_endpoint_name_is_unknown(registry: Registry) -> None:
    with pytest.raises(UnknownModelError):
        registry.resolve("vllm/qwen")


# --- ids in config --------------------------------------------------------------------------------


def test_config_entries_without_prefix_get_the_providers(registry: Registry) -> None:
    ids = [entry.id for entry in registry.configured_models()]
    assert ids == [
        "ollama/llama3.2:3b",
        "ollama/llava:7b",
        "ollama/qwen2.5:7b",
        "ollama/old-model:1b",
        "gemini-2.5-flash",
    ]
    assert registry.configured_entry("ollama/llava:7b") is not None
    assert registry.configured_entry("llava:7b") is None


@pytest.mark.parametrize(
    ("provider", "model_id", "expected"),
    [
        ("ollama", "llama3.2", "ollama/llama3.2"),
        ("ollama", "ollama/llama3.2", "ollama/llama3.2"),
        ("ollama", "hf.co/x/y:q4", "ollama/hf.co/x/y:q4"),
        ("gemini", "gemini-2.5-pro", "gemini-2.5-pro"),
        ("gemini", "vertex/gemini-2.5-pro", "vertex/gemini-2.5-pro"),
        ("anthropic", "claude-opus-4", "claude-opus-4"),
        ("openai", "gpt-4o", "openai/gpt-4o"),
    ],
)
def test_full_id(provider: str, model_id: str, expected: str) -> None:
    assert full_id(provider, model_id) == expected


# --- aliases --------------------------------------------------------------------------------------


def test_alias_and_alias_chain(make_registry: MakeRegistry) -> None:
    registry = make_registry(CONFIG + '\n[aliases]\nfast = "ollama/qwen2.5:7b"\nquick = "fast"\nq = "quick"\n')
    assert registry.resolve("fast") == Route("ollama/qwen2.5:7b", "ollama", "qwen2.5:7b")
    assert registry.resolve("q") == Route("ollama/qwen2.5:7b", "ollama", "qwen2.5:7b")


@pytest.mark.parametrize(
    ("aliases", "start", "shown"),
    [
        ('a = "b"\nb = "a"\n', "a", "a → b → a"),
        ('me = "me"\n', "me", "me → me"),
        ('a = "b"\nb = "c"\nc = "b"\n', "a", "a → b → c → b"),
    ],
)
def test_alias_loop_is_a_clear_error(make_registry: MakeRegistry, aliases: str, start: str, shown: str) -> None:
    registry = make_registry(f"[aliases]\n{aliases}")
    with pytest.raises(UnknownModelError) as caught:
        registry.resolve(start)
    assert "loop" in str(caught.value).lower()
    assert shown in str(caught.value)
    assert "[aliases]" in caught.value.user_message()


def test_alias_to_a_disabled_model_is_refused(make_registry: MakeRegistry) -> None:
    registry = make_registry(CONFIG + '\n[aliases]\nold = "ollama/old-model:1b"\n')
    with pytest.raises(UnknownModelError) as caught:
        registry.resolve("old")
    assert "ollama/old-model:1b" in str(caught.value)
    assert "disabled" in str(caught.value)


# --- defaults -------------------------------------------------------------------------------------


@pytest.mark.parametrize("empty", [None, "", "   "])
def test_empty_model_means_defaults_model(make_registry: MakeRegistry, empty: str | None) -> None:
    registry = make_registry('[defaults]\nmodel = "ollama/qwen2.5:7b"\nvision_model = "ollama/llava:7b"\n' + CONFIG)
    assert registry.resolve(empty).model_id == "ollama/qwen2.5:7b"
    assert registry.resolve(empty, vision=True).model_id == "ollama/llava:7b"


def test_vision_falls_back_to_defaults_model(make_registry: MakeRegistry) -> None:
    registry = make_registry('[defaults]\nmodel = "ollama/llava:7b"\n')
    assert registry.resolve("", vision=True).model_id == "ollama/llava:7b"


def test_default_can_be_an_alias(make_registry: MakeRegistry) -> None:
    registry = make_registry('[defaults]\nmodel = "fast"\n[aliases]\nfast = "ollama/qwen2.5:7b"\n')
    assert registry.resolve(None) == Route("ollama/qwen2.5:7b", "ollama", "qwen2.5:7b")


def test_no_default_means_first_enabled_configured_model(make_registry: MakeRegistry) -> None:
    registry = make_registry(
        "[[providers.ollama.models]]\nid = \"retired:1b\"\nenabled = false\n"
        '[[providers.ollama.models]]\nid = "llama3.2:3b"\n'
        '[[providers.ollama.models]]\nid = "llava:7b"\nvision = true\n'
    )
    assert registry.resolve(None).model_id == "ollama/llama3.2:3b"
    assert registry.resolve(None, vision=True).model_id == "ollama/llava:7b"


@pytest.mark.parametrize("vision", [False, True])
def test_no_model_and_no_default_is_a_clear_error(make_registry: MakeRegistry, vision: bool) -> None:
    registry = make_registry('[[providers.ollama.models]]\nid = "off:1b"\nenabled = false\n')
    with pytest.raises(UnknownModelError) as caught:
        registry.resolve("", vision=vision)
    message = caught.value.user_message()
    assert "No model was given" in message
    assert "defaults.model" in message
    if vision:
        assert "defaults.vision_model" in message


def test_text_only_config_has_no_vision_default(make_registry: MakeRegistry) -> None:
    registry = make_registry('[[providers.ollama.models]]\nid = "llama3.2:3b"\n')
    with pytest.raises(UnknownModelError) as caught:
        registry.resolve(None, vision=True)
    assert "defaults.vision_model" in caught.value.user_message()


# --- disabled and unknown ids ---------------------------------------------------------------------


def test_disabled_model_is_refused(registry: Registry) -> None:
    model_id = "ollama/old-model:1b"  # configured as `old-model:1b` under [providers.ollama]
    with pytest.raises(UnknownModelError) as caught:
        registry.resolve(model_id)
    assert model_id in str(caught.value)
    assert "disabled" in str(caught.value)
    assert "enabled = true" in caught.value.user_message()


def test_unknown_id_lists_the_prefixes(registry: Registry) -> None:
    with pytest.raises(UnknownModelError) as caught:
        registry.resolve("gpt-4o")
    message = caught.value.user_message()
    assert "'gpt-4o'" in message
    prefixes = ("ollama/", "gemini/", "vertex/", "gemini-", "anthropic/", "claude-", "openai/", "client", "lmstudio/")
    for prefix in prefixes:
        assert prefix in message, prefix


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [
        ("llava:7b", "ollama/llava:7b"),  # a bare Ollama name
        ("llama3.2:3", "ollama/llama3.2:3b"),
        ("olama/llama3.2:3b", "ollama/llama3.2:3b"),
        ("gemini2.5-flash", "gemini-2.5-flash"),
        ("fats", "fast"),  # an alias
    ],
)
def test_unknown_id_suggests_the_closest_ids(make_registry: MakeRegistry, typo: str, suggestion: str) -> None:
    registry = make_registry(CONFIG + '\n[aliases]\nfast = "ollama/qwen2.5:7b"\n')
    with pytest.raises(UnknownModelError) as caught:
        registry.resolve(typo)
    message = caught.value.user_message()
    assert "Did you mean" in message
    assert repr(suggestion) in message.split("Use one of the prefixes")[0]


def test_discovered_ids_are_suggested_too(registry: Registry) -> None:
    registry.remember_discovered(["ollama/mistral-nemo:12b"])
    with pytest.raises(UnknownModelError) as caught:
        registry.resolve("mistral-nemo:12b")
    assert "'ollama/mistral-nemo:12b'" in caught.value.user_message()


def test_nothing_close_means_no_did_you_mean(registry: Registry) -> None:
    with pytest.raises(UnknownModelError) as caught:
        registry.resolve("zzzzzzzz")
    assert "Did you mean" not in caught.value.user_message()


# --- adapters -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_ollama_adapter_is_built_once_and_rebuilt_after_close(registry: Registry) -> None:
    first = registry.adapter("ollama")
    assert isinstance(first, OllamaAdapter)
    assert registry.adapter("ollama") is first
    assert first.endpoint == "http://127.0.0.1:9"
    await registry.aclose()
    assert registry.built_adapters() == {}
    second = registry.adapter("ollama")
    assert second is not first
    await registry.aclose()


@pytest.mark.parametrize("model_id", [
    "gemini-x/../../v1beta/files", "gemini-2.5-flash?key=x", "gemini-2.5-flash#frag", "ollama/llama3.2 x",
    "claude-3%2F..", "ollama/\\\\evil", "ollama/a\nb", "anthropic/../x",
])
def test_model_ids_that_would_bend_provider_urls_are_refused(make_settings: Callable[..., Settings],
                                                             model_id: str) -> None:
    registry = Registry(make_settings(""))
    with pytest.raises(UnknownModelError, match="holds characters no model name has"):
        registry.resolve(model_id)


@pytest.mark.parametrize("model_id", ["ollama/hf.co/user/repo:Q4_K_M", "vertex/claude-3-5-sonnet@20240620",
                                      "gemini-2.5-flash-preview-05-20", "ollama/llama3.2:3b"])
def test_real_model_names_pass(make_settings: Callable[..., Settings], model_id: str) -> None:
    assert Registry(make_settings("")).resolve(model_id).model_id == model_id


@pytest.mark.parametrize(("model_id", "provider"), [("openai/gpt-4o", "openai"), ("lmstudio/qwen", "lmstudio")])
def test_openai_and_compatible_endpoints_get_the_openai_adapter(registry: Registry, model_id: str,
                                                                provider: str) -> None:
    from mcp_llm.adapters.openai import OpenAIAdapter

    route = registry.resolve(model_id)
    adapter = registry.adapter(route.provider)
    assert isinstance(adapter, OpenAIAdapter) and adapter.provider == provider
    assert provider in registry.provider_names() and provider in registry.providers_with_adapters()


@pytest.mark.parametrize("native", ["llama3.2:3b", "gemini-2.5-flash", "claude-haiku-4-5", "gpt-4o", "hf.co/x/y:q4"])
def test_the_ids_a_provider_lists_its_models_as_route_back_to_it(registry: Registry, native: str) -> None:
    # Each adapter lists a model as its spec's `model_id`: that id must route back to the same provider and name.
    from mcp_llm.adapters.providers import PROVIDERS

    for spec in PROVIDERS:
        for options in {tuple(prefix.options.items()) for prefix in spec.prefixes}:
            model_id = spec.model_id(native, **dict(options))
            assert registry.route_for(model_id) == Route(model_id, spec.name, native, options=dict(options)), model_id
