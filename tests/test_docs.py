"""The documentation stays true to the code: the example config loads and documents every key."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel

from mcp_llm.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config.example.toml"


def _keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        key = field.alias or name
        keys.add(prefix + key)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= _keys(annotation, f"{prefix}{key}.")
    return keys


def test_example_config_loads() -> None:
    settings = load_settings(EXAMPLE, env={})
    assert settings.defaults.model == "ollama/llama3.2:3b"
    assert settings.providers.ollama.effective_endpoint == "http://localhost:11434"


def test_example_config_mentions_every_key() -> None:
    text = EXAMPLE.read_text()
    tomllib.loads(text)
    missing = []
    for dotted in _keys(Settings):
        leaf = dotted.rsplit(".", 1)[-1]
        if f"{leaf} =" not in text and f"[{dotted}" not in text:
            missing.append(dotted)
    assert not missing, f"config.example.toml does not document: {missing}"


def test_readme_names_the_test_command_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest -q" in readme
    assert "python -m pytest -q" in ci


def test_example_config_shows_the_discovery_defaults() -> None:
    """The ports config.example.toml says are looked at are the ones that are."""
    from mcp_llm.config import DISCOVERY_SERVERS, DiscoverySettings

    example = load_settings(EXAMPLE, env={}).discovery
    assert example == DiscoverySettings() and example.servers == DISCOVERY_SERVERS


def test_schema_max_depth_counts_json_levels_as_the_example_config_says() -> None:
    """config.example.toml: 64 admits 31 object schemas one inside the other (README said 64 levels)."""
    from mcp_llm.errors import SchemaError
    from mcp_llm.schema import parse_schema_argument

    def nested(levels: int) -> dict[str, object]:
        schema: dict[str, object] = {"type": "string"}
        for _ in range(levels):
            schema = {"type": "object", "properties": {"a": schema}}
        return schema

    assert "64 admits 31 object schemas" in EXAMPLE.read_text()
    parse_schema_argument(nested(31))
    try:
        parse_schema_argument(nested(32))
    except SchemaError as exc:
        assert "nested more than 64 levels" in exc.message
    else:
        raise AssertionError("32 nested object schemas passed a 64-level limit")


def test_readme_makes_no_claim_that_measurements_contradicted() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for claim in ("never hangs", "about 8 minutes", "about 8 on 2"):
        assert claim not in readme, claim
    contributing = readme[readme.index("## Contributing"):]
    assert "test_nginx.py` (two replicas behind it) skips unless nginx" in contributing
    assert "apt-get install nginx" in contributing
