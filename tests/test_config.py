"""Settings: where the file is found, what a mistake in it says, the environment, redaction.

`load_settings(path, env={...})` is always given an explicit env (with `XDG_CONFIG_HOME` in a
temporary directory), so the developer's own config and environment never leak in. The CLI is
run as a real subprocess, with canary keys in its environment.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_llm.cli import main as cli_main
from mcp_llm.config import Settings, describe, load_settings
from mcp_llm.errors import ConfigError
from tests.conftest import write_config

CANARIES = {
    "OLLAMA_API_KEY": "sk-canary-123-ollama",
    "GEMINI_API_KEY": "sk-canary-123-gemini",
    "ANTHROPIC_API_KEY": "sk-canary-123-anthropic",
    "OPENAI_API_KEY": "sk-canary-123-openai",
    "LMSTUDIO_KEY": "sk-canary-123-lmstudio",
    "MCP_HTTP_TOKEN": "sk-canary-123-token",
    "MY_CLAUDE_KEY": "sk-canary-123-myclaude",
}
CANARY = "sk-canary-123"


@pytest.fixture
def xdg(tmp_path: Path) -> Path:
    """An empty user config home, so the real ~/.config/mcp-llm is never read."""
    home = tmp_path / "xdg"
    home.mkdir()
    return home


def env_with(xdg: Path, **values: str) -> dict[str, str]:
    return {"XDG_CONFIG_HOME": str(xdg), **values}


# --- finding the file -----------------------------------------------------------------------------


def test_no_config_file_at_all_gives_the_defaults(xdg: Path) -> None:
    settings = load_settings(None, env=env_with(xdg))
    assert settings.path is None
    assert settings.defaults.model == ""
    assert settings.defaults.timeout_s == 120.0
    assert settings.providers.ollama.effective_endpoint == "http://localhost:11434"
    assert settings.providers.ollama.has_api_key is False
    assert settings.source_of("defaults.timeout_s") == "default"


def test_missing_explicit_config_names_the_path(tmp_path: Path, xdg: Path) -> None:
    missing = tmp_path / "nowhere" / "mine.toml"
    with pytest.raises(ConfigError) as caught:
        load_settings(missing, env=env_with(xdg))
    assert str(missing) in str(caught.value)


def test_missing_mcp_llm_config_names_the_path(tmp_path: Path, xdg: Path) -> None:
    missing = tmp_path / "gone.toml"
    with pytest.raises(ConfigError) as caught:
        load_settings(None, env=env_with(xdg, MCP_LLM_CONFIG=str(missing)))
    assert str(missing) in str(caught.value)


def test_mcp_llm_config_is_honoured_before_the_user_dir(tmp_path: Path, xdg: Path) -> None:
    (xdg / "mcp-llm").mkdir()
    write_config(xdg / "mcp-llm" / "config.toml", '[defaults]\nmodel = "ollama/from-user-dir"\n')
    chosen = write_config(tmp_path / "chosen.toml", '[defaults]\nmodel = "ollama/from-env"\n')

    settings = load_settings(None, env=env_with(xdg, MCP_LLM_CONFIG=str(chosen)))
    assert settings.defaults.model == "ollama/from-env"
    assert settings.path == chosen


def test_explicit_path_wins_over_mcp_llm_config(tmp_path: Path, xdg: Path) -> None:
    from_env = write_config(tmp_path / "env.toml", '[defaults]\nmodel = "ollama/from-env"\n')
    explicit = write_config(tmp_path / "flag.toml", '[defaults]\nmodel = "ollama/from-flag"\n')
    settings = load_settings(explicit, env=env_with(xdg, MCP_LLM_CONFIG=str(from_env)))
    assert settings.defaults.model == "ollama/from-flag"
    assert settings.path == explicit


def test_user_config_dir_from_xdg_config_home(xdg: Path) -> None:
    (xdg / "mcp-llm").mkdir()
    user = write_config(xdg / "mcp-llm" / "config.toml", '[defaults]\nmodel = "ollama/from-user-dir"\n')
    settings = load_settings(None, env=env_with(xdg))
    assert settings.defaults.model == "ollama/from-user-dir"
    assert settings.path == user
    assert settings.source_of("defaults.model") == "file"


# --- mistakes in the file -------------------------------------------------------------------------


def test_invalid_toml_names_the_file(tmp_path: Path, xdg: Path) -> None:
    bad = write_config(tmp_path / "bad.toml", '[defaults\nmodel = "x"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(bad, env=env_with(xdg))
    assert str(bad) in str(caught.value)
    assert "TOML" in str(caught.value)


def test_unknown_key_is_named_not_ignored(tmp_path: Path, xdg: Path) -> None:
    typo = write_config(tmp_path / "typo.toml", '[providers.ollama]\nendpont = "http://gpu:11434"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(typo, env=env_with(xdg))
    assert "providers.ollama.endpont" in str(caught.value)
    assert "did you mean `endpoint`?" in str(caught.value)
    assert str(typo) in str(caught.value)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[defaults]\ntimeout_s = "fast"\n', "defaults.timeout_s"),
        ("[defaults]\nmax_retries = 99\n", "defaults.max_retries"),
        ('[providers.ollama]\nuse_cloud = "maybe"\n', "providers.ollama.use_cloud"),
        ("[[providers.ollama.models]]\nid = 3\n", "providers.ollama.models.0.id"),
        ('[providers.gemini]\nbackend = "bedrock"\n', "providers.gemini.backend"),
        ("[server]\nport = 70000\n", "server.port"),
        ('aliases = "fast"\n', "aliases"),
    ],
)
def test_wrong_type_names_its_key(tmp_path: Path, xdg: Path, toml: str, key: str) -> None:
    path = write_config(tmp_path / "typed.toml", toml)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env=env_with(xdg))
    assert f"`{key}`" in str(caught.value)
    assert str(path) in str(caught.value)


def test_a_providers_value_that_is_not_a_table_is_named(tmp_path: Path, xdg: Path) -> None:
    # The Google variables fill providers.gemini only when [providers] is a table; otherwise validation says so.
    path = write_config(tmp_path / "scalar.toml", "providers = 5\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env=env_with(xdg, GOOGLE_CLOUD_PROJECT="p"))
    assert "`providers`" in str(caught.value) and str(path) in str(caught.value)
    for value in ("5", '"text"'):  # a provider's table that is not a table, with its variables set
        path = write_config(tmp_path / "scalar.toml", f"[providers]\ngemini = {value}\n")
        with pytest.raises(ConfigError, match=r"`providers\.gemini`"):
            load_settings(path, env=env_with(xdg, GOOGLE_CLOUD_PROJECT="p", GOOGLE_GENAI_USE_VERTEXAI="1"))


def test_the_providers_table_follows_the_specs(xdg: Path) -> None:
    from mcp_llm.adapters.providers import PROVIDERS
    from mcp_llm.config import RESERVED_ENDPOINT_NAMES

    described = describe(load_settings(None, env=env_with(xdg)))
    assert list(described["providers"]) == [spec.name for spec in PROVIDERS]
    assert list(described["providers"]) == ["ollama", "gemini", "anthropic", "openai", "openai_compatible", "client"]
    assert RESERVED_ENDPOINT_NAMES == {"ollama", "gemini", "vertex", "anthropic", "openai", "client"}


def test_openai_compatible_endpoint_takes_a_models_list(tmp_path: Path, xdg: Path) -> None:
    path = write_config(
        tmp_path / "compat.toml",
        '[providers.openai_compatible.lmstudio]\nendpoint = "http://127.0.0.1:1234/v1"\nmodels = ["qwen2.5-7b"]\n',
    )
    settings = load_settings(path, env=env_with(xdg))
    assert settings.providers.openai_compatible["lmstudio"].models == ["qwen2.5-7b"]


# --- the Ollama endpoint --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider_toml", "ollama_host", "expected"),
    [
        pytest.param("use_cloud = true", "gpu-box:11434", "https://ollama.com:443", id="cloud-ignores-host"),
        pytest.param('use_cloud = true\nendpoint = "http://127.0.0.1:9"', None, "http://127.0.0.1:9", id="cloud-ep"),
        pytest.param('endpoint = "http://gpu:11434"', "elsewhere:1", "http://gpu:11434", id="endpoint-wins"),
        pytest.param("", "0.0.0.0:11434", "http://127.0.0.1:11434", id="bind-address"),
        pytest.param("", "0.0.0.0", "http://127.0.0.1:11434", id="bind-address-no-port"),
        pytest.param("", "localhost", "http://localhost:11434", id="bare-host"),
        pytest.param("", "http://h:1234/", "http://h:1234", id="url-trailing-slash"),
        pytest.param("", "gpu-box:8080", "http://gpu-box:8080", id="host-port"),
        pytest.param("", "https://ollama.example", "https://ollama.example:443", id="https"),
        pytest.param("", "[::1]:8080", "http://[::1]:8080", id="ipv6"),
        pytest.param("", "example.com/proxy/", "http://example.com:11434/proxy", id="path"),
        pytest.param("", None, "http://localhost:11434", id="nothing"),
        pytest.param(
            "",
            ":56789",
            "http://127.0.0.1:56789",
            id="port-only",
        ),
        pytest.param(
            "",
            "http://example.com",
            "http://example.com:80",
            id="http-scheme-default-port",
        ),
    ],
)
def test_ollama_endpoint_rules(
    tmp_path: Path, xdg: Path, provider_toml: str, ollama_host: str | None, expected: str
) -> None:
    path = write_config(tmp_path / "ollama.toml", f"[providers.ollama]\n{provider_toml}\n")
    env = env_with(xdg, **({"OLLAMA_HOST": ollama_host} if ollama_host is not None else {}))
    assert load_settings(path, env=env).providers.ollama.effective_endpoint == expected


def test_ollama_endpoint_sources(tmp_path: Path, xdg: Path) -> None:
    empty = write_config(tmp_path / "empty.toml", "")
    from_file = write_config(tmp_path / "ep.toml", '[providers.ollama]\nendpoint = "http://gpu:11434"\n')
    host = {"OLLAMA_HOST": "gpu-box"}
    key = "providers.ollama.endpoint"
    assert load_settings(empty, env=env_with(xdg)).source_of(key) == "default"
    assert load_settings(empty, env=env_with(xdg, **host)).source_of(key) == "env:OLLAMA_HOST"
    assert load_settings(from_file, env=env_with(xdg, **host)).source_of(key) == "file"


# --- Google variables, keys -----------------------------------------------------------------------


@pytest.mark.parametrize(("value", "backend"), [("true", "vertex"), ("1", "vertex"), ("TRUE", "vertex"), ("0", "api")])
def test_google_genai_use_vertexai(tmp_path: Path, xdg: Path, value: str, backend: str) -> None:
    path = write_config(tmp_path / "c.toml", "")
    settings = load_settings(path, env=env_with(xdg, GOOGLE_GENAI_USE_VERTEXAI=value))
    assert settings.providers.gemini.backend == backend
    expected_source = "env:GOOGLE_GENAI_USE_VERTEXAI" if backend == "vertex" else "default"
    assert settings.source_of("providers.gemini.backend") == expected_source


def test_google_cloud_project_and_location_picked_up(tmp_path: Path, xdg: Path) -> None:
    path = write_config(tmp_path / "c.toml", "")
    env = env_with(xdg, GOOGLE_CLOUD_PROJECT="my-proj", GOOGLE_CLOUD_LOCATION="europe-west4")
    gemini = load_settings(path, env=env).providers.gemini
    assert (gemini.project, gemini.location) == ("my-proj", "europe-west4")
    settings = load_settings(path, env=env)
    assert settings.source_of("providers.gemini.project") == "env:GOOGLE_CLOUD_PROJECT"
    assert settings.source_of("providers.gemini.location") == "env:GOOGLE_CLOUD_LOCATION"


def test_file_values_win_over_google_variables(tmp_path: Path, xdg: Path) -> None:
    path = write_config(tmp_path / "c.toml", '[providers.gemini]\nbackend = "api"\nproject = "file-proj"\n')
    env = env_with(xdg, GOOGLE_GENAI_USE_VERTEXAI="true", GOOGLE_CLOUD_PROJECT="env-proj")
    settings = load_settings(path, env=env)
    assert (settings.providers.gemini.backend, settings.providers.gemini.project) == ("api", "file-proj")
    assert settings.source_of("providers.gemini.project") == "file"


def test_keys_come_from_the_variable_api_key_env_names(tmp_path: Path, xdg: Path) -> None:
    path = write_config(
        tmp_path / "keys.toml",
        '[providers.anthropic]\napi_key_env = "MY_CLAUDE_KEY"\n'
        '[providers.ollama]\napi_key_env = "MY_OLLAMA_KEY"\n'
        '[providers.openai_compatible.lmstudio]\nendpoint = "http://127.0.0.1:1234/v1"\napi_key_env = "LMSTUDIO_KEY"\n'
        '[server]\ntoken_env = "MCP_HTTP_TOKEN"\n',
    )
    env = env_with(
        xdg,
        MY_CLAUDE_KEY="k-claude",
        MY_OLLAMA_KEY="k-ollama",
        GOOGLE_API_KEY="k-google",
        LMSTUDIO_KEY="k-lm",
        MCP_HTTP_TOKEN="k-token",
    )
    settings = load_settings(path, env=env)
    providers = settings.providers
    assert providers.anthropic.api_key is not None
    assert providers.anthropic.api_key.get_secret_value() == "k-claude"
    assert providers.ollama.api_key is not None
    assert providers.ollama.api_key.get_secret_value() == "k-ollama"
    assert providers.gemini.api_key is not None
    assert providers.gemini.api_key.get_secret_value() == "k-google"  # GEMINI_API_KEY unset: GOOGLE_API_KEY
    assert providers.openai_compatible["lmstudio"].api_key is not None
    assert providers.openai_compatible["lmstudio"].api_key.get_secret_value() == "k-lm"
    assert settings.server.token is not None
    assert settings.server.token.get_secret_value() == "k-token"
    assert providers.openai.has_api_key is False
    assert settings.source_of("providers.anthropic.api_key") == "env:MY_CLAUDE_KEY"
    assert settings.source_of("providers.ollama.api_key") == "env:MY_OLLAMA_KEY"
    assert settings.source_of("providers.gemini.api_key") == "env:GOOGLE_API_KEY"
    assert settings.source_of("providers.openai_compatible.lmstudio.api_key") == "env:LMSTUDIO_KEY"


def test_named_variable_wins_over_the_sdk_default(tmp_path: Path, xdg: Path) -> None:
    path = write_config(tmp_path / "keys.toml", '[providers.gemini]\napi_key_env = "MY_GEMINI"\n')
    settings = load_settings(path, env=env_with(xdg, MY_GEMINI="mine", GEMINI_API_KEY="sdk", GOOGLE_API_KEY="g"))
    assert settings.providers.gemini.api_key is not None
    assert settings.providers.gemini.api_key.get_secret_value() == "mine"


# --- redaction, sources ---------------------------------------------------------------------------

SECRET_CONFIG = """
[defaults]
model = "ollama/llama3.2:3b"

[providers.ollama]
endpoint = "http://127.0.0.1:11434"

[providers.anthropic]
api_key_env = "MY_CLAUDE_KEY"

[providers.openai_compatible.lmstudio]
endpoint = "http://127.0.0.1:1234/v1"
api_key_env = "LMSTUDIO_KEY"

[server]
token_env = "MCP_HTTP_TOKEN"
"""


def secret_settings(tmp_path: Path, xdg: Path) -> Settings:
    path = write_config(tmp_path / "secret.toml", SECRET_CONFIG)
    return load_settings(path, env=env_with(xdg, **CANARIES))


def test_describe_never_contains_a_key(tmp_path: Path, xdg: Path) -> None:
    settings = secret_settings(tmp_path, xdg)
    described = json.dumps(describe(settings))
    assert CANARY not in described
    for value in CANARIES.values():
        assert value not in described
    assert CANARY not in repr(settings)
    assert CANARY not in str(settings)
    assert CANARY not in settings.model_dump_json()


def test_describe_shows_set_and_not_set(tmp_path: Path, xdg: Path) -> None:
    settings = secret_settings(tmp_path, xdg)
    described = describe(settings)
    providers = described["providers"]
    for name in ("ollama", "gemini", "anthropic", "openai"):
        assert providers[name]["api_key"] == "<set>", name
    assert providers["openai_compatible"]["lmstudio"]["api_key"] == "<set>"
    assert providers["ollama"]["effective_endpoint"] == "http://127.0.0.1:11434"

    bare = describe(load_settings(None, env=env_with(xdg)))
    for name in ("ollama", "gemini", "anthropic", "openai"):
        assert bare["providers"][name]["api_key"] == "<not set>", name


def test_source_of_file_env_and_default(tmp_path: Path, xdg: Path) -> None:
    settings = secret_settings(tmp_path, xdg)
    assert settings.source_of("defaults.model") == "file"
    assert settings.source_of("providers.anthropic.api_key_env") == "file"
    assert settings.source_of("providers.ollama.api_key") == "env:OLLAMA_API_KEY"
    assert settings.source_of("providers.anthropic.api_key") == "env:MY_CLAUDE_KEY"
    assert settings.source_of("defaults.timeout_s") == "default"
    assert settings.source_of("images.allow_urls") == "default"


# --- the CLI --------------------------------------------------------------------------------------


def run_cli(tmp_path: Path, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        **CANARIES,
        **(extra_env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "mcp_llm", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_cli_config_prints_sources_and_never_a_key(tmp_path: Path) -> None:
    path = write_config(tmp_path / "cli.toml", SECRET_CONFIG)
    done = run_cli(tmp_path, "--config", str(path), "config", extra_env={"GOOGLE_CLOUD_PROJECT": "proj-x"})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert CANARY not in out + done.stderr
    assert str(path) in out
    lines = out.splitlines()
    assert 'defaults.model = "ollama/llama3.2:3b"    # file' in lines
    assert 'providers.ollama.api_key = "<set>"    # env:OLLAMA_API_KEY' in lines
    assert 'providers.anthropic.api_key = "<set>"    # env:MY_CLAUDE_KEY' in lines
    assert 'providers.gemini.project = "proj-x"    # env:GOOGLE_CLOUD_PROJECT' in lines
    assert 'providers.openai_compatible.lmstudio.api_key = "<set>"' in " ".join(lines)


def test_cli_config_json_never_a_key(tmp_path: Path) -> None:
    path = write_config(tmp_path / "cli.toml", SECRET_CONFIG)
    done = run_cli(tmp_path, "--config", str(path), "config", "--json")
    assert done.returncode == 0, done.stderr
    assert CANARY not in done.stdout + done.stderr
    printed = json.loads(done.stdout)
    assert printed["path"] == str(path)
    assert printed["config"]["defaults"]["model"] == "ollama/llama3.2:3b"
    assert printed["config"]["providers"]["ollama"]["api_key"] == "<set>"
    assert printed["config"]["providers"]["anthropic"]["api_key"] == "<set>"


def test_cli_config_json_includes_sources(tmp_path: Path) -> None:
    path = write_config(tmp_path / "cli.toml", SECRET_CONFIG)
    done = run_cli(tmp_path, "--config", str(path), "config", "--json")
    assert done.returncode == 0, done.stderr
    assert "env:OLLAMA_API_KEY" in done.stdout
    assert "env:MY_CLAUDE_KEY" in done.stdout


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[providers.ollama]\nendpont = "http://gpu:11434"\n', "providers.ollama.endpont"),
        ("[defaults\n", "TOML"),
        (None, "does not exist"),
    ],
    ids=["unknown-key", "bad-toml", "missing-file"],
)
def test_cli_bad_config_exits_2_with_the_message_on_stderr(tmp_path: Path, toml: str | None, expected: str) -> None:
    path = tmp_path / "broken.toml"
    if toml is not None:
        write_config(path, toml)
    done = run_cli(tmp_path, "--config", str(path), "config")
    assert done.returncode == 2
    assert done.stdout == ""
    assert expected in done.stderr
    assert str(path) in done.stderr
    assert CANARY not in done.stderr


@pytest.mark.parametrize(("name", "why"), [("ollama", "built-in provider prefix"), ("client", "built-in"),
                                           ("my box", "letters, digits")])
def test_an_endpoint_name_that_routing_could_not_reach_is_refused(tmp_path: Path, xdg: Path, name: str,
                                                                  why: str) -> None:
    config = write_config(tmp_path / "c.toml", f'[providers.openai_compatible."{name}"]\nendpoint = "http://h/v1"\n')
    with pytest.raises(ConfigError, match=why):
        load_settings(config, env=env_with(xdg))


@pytest.mark.parametrize(("content", "expected"), [
    ('[defaults]\nmodel = "ollama/caf\u00e9"\n'.encode("latin-1"), "byte 0xe9 on line 2"),
    ('[defaults]\nmodel = "x"\n'.encode("utf-16"), "byte 0xff on line 1"),
], ids=["latin-1", "utf-16"])
def test_cli_config_that_is_not_utf8_exits_2_with_the_reason(tmp_path: Path, content: bytes, expected: str) -> None:
    """README: a bad config makes mcp-llm exit 2 with the reason; a non-UTF-8 file printed a traceback, exit 1."""
    path = tmp_path / "encoded.toml"
    path.write_bytes(content)
    for command in ("config", "serve"):
        done = run_cli(tmp_path, "--config", str(path), command)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and done.stdout == ""
        assert f"Config file {path} is not UTF-8 text: {expected}" in done.stderr and "Save it as UTF-8" in done.stderr


def test_a_utf8_config_with_a_byte_order_mark_loads(tmp_path: Path, xdg: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes('[defaults]\nmodel = "ollama/café"\n'.encode("utf-8-sig"))
    assert load_settings(path, env=env_with(xdg)).defaults.model == "ollama/café"


# --- [discovery] and MCP_LLM_DISCOVERY -------------------------------------------------------------


def test_discovery_looks_at_the_usual_ports_by_default(xdg: Path) -> None:
    discovery = load_settings(None, env=env_with(xdg)).discovery
    assert discovery.enabled and discovery.ollama
    assert discovery.servers == {"llamacpp": "http://127.0.0.1:8080/v1", "lmstudio": "http://127.0.0.1:1234/v1",
                                 "vllm": "http://127.0.0.1:8000/v1"}


def test_mcp_llm_discovery_replaces_the_list_or_turns_it_off(tmp_path: Path, xdg: Path) -> None:
    listed = load_settings(None, env=env_with(xdg, MCP_LLM_DISCOVERY="llamacpp=http://127.0.0.1:9/v1, x=http://h/v1"))
    assert listed.discovery.servers == {"llamacpp": "http://127.0.0.1:9/v1", "x": "http://h/v1"}
    assert listed.source_of("discovery.servers") == "env:MCP_LLM_DISCOVERY"
    off = load_settings(None, env=env_with(xdg, MCP_LLM_DISCOVERY="off"))
    assert off.discovery.enabled is False and off.source_of("discovery.enabled") == "env:MCP_LLM_DISCOVERY"
    config = write_config(tmp_path / "c.toml", '[discovery.servers]\nmine = "http://127.0.0.1:7/v1"\n')
    kept = load_settings(config, env=env_with(xdg, MCP_LLM_DISCOVERY="llamacpp=http://127.0.0.1:9/v1"))
    assert kept.discovery.servers == {"mine": "http://127.0.0.1:7/v1"}  # the file's values win
    with pytest.raises(ConfigError, match="'nonsense' is not name=url"):
        load_settings(None, env=env_with(xdg, MCP_LLM_DISCOVERY="nonsense"))


@pytest.mark.parametrize(("toml", "why"), [
    ('[discovery.servers]\nollama = "http://127.0.0.1:1/v1"\n', "built-in provider prefix"),
    ('[discovery.servers]\nx = "127.0.0.1:8080"\n', r"an http\(s\) base URL"),
    ("[discovery]\ntimeout_s = 0\n", "discovery.timeout_s"),
])
def test_discovery_settings_are_checked(tmp_path: Path, xdg: Path, toml: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        load_settings(write_config(tmp_path / "c.toml", toml), env=env_with(xdg))


def test_a_discovered_endpoint_gets_a_name_no_configured_one_has(tmp_path: Path, xdg: Path) -> None:
    config = write_config(tmp_path / "c.toml", '[providers.openai_compatible.llamacpp]\nendpoint = "http://gpu:8080/v1"\n'
                          '[providers.openai_compatible.here]\nendpoint = "http://localhost:1234/v1/"\n')
    settings = load_settings(config, env=env_with(xdg))
    assert settings.add_discovered_endpoint("llamacpp", "http://127.0.0.1:8080/v1") == "llamacpp-local"
    assert settings.add_discovered_endpoint("llamacpp", "http://127.0.0.1:8080/v1") == "llamacpp-local"  # again
    assert settings.add_discovered_endpoint("llamacpp", "http://127.0.0.1:8081/v1") == "llamacpp-local2"
    assert settings.add_discovered_endpoint("lmstudio", "http://127.0.0.1:1234/v1") == "here"  # the same server
    assert settings.providers.openai_compatible["llamacpp"].endpoint == "http://gpu:8080/v1"


# --- `mcp-llm config`: every secret redacted, and each read from its variable ---------------------


SECRETS = {
    "OLLAMA_API_KEY": "canary-ollama-1111",
    "GEMINI_API_KEY": "canary-gemini-2222",
    "ANTHROPIC_API_KEY": "canary-anthropic-3333",
    "OPENAI_API_KEY": "canary-openai-4444",
    "VERTEX_TOKEN": "canary-vertex-token-5555",
    "LMSTUDIO_KEY": "canary-lmstudio-6666",
    "MCP_HTTP_TOKEN": "canary-http-token-7777",
}


VERTEX_CONFIG = """
[providers.gemini]
backend = "vertex"
project = "proj-x"
access_token_env = "VERTEX_TOKEN"

[providers.openai_compatible.lmstudio]
endpoint = "http://127.0.0.1:1234/v1"
api_key_env = "LMSTUDIO_KEY"

[server]
token_env = "MCP_HTTP_TOKEN"
"""


def run_config_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                       env: dict[str, str], *args: str) -> str:
    """`mcp-llm --config … config [args]` through the CLI's own entry point; its stdout."""
    for name in (*SECRETS, "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_CLOUD_PROJECT", "OLLAMA_HOST"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    root = logging.getLogger()  # main() sets up its stderr logging: undone after the test
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    path = tmp_path / "config.toml"
    path.write_text(VERTEX_CONFIG, encoding="utf-8")
    assert cli_main(["--config", str(path), "config", *args]) == 0
    out, err = capsys.readouterr()
    for secret in SECRETS.values():
        assert secret not in out + err, f"`mcp-llm config` printed a secret: {secret}"
    return out


def test_config_command_redacts_every_secret_and_says_where_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = run_config_command(tmp_path, monkeypatch, capsys, SECRETS).splitlines()
    for name, variable in (("ollama", "OLLAMA_API_KEY"), ("gemini", "GEMINI_API_KEY"),
                           ("anthropic", "ANTHROPIC_API_KEY"), ("openai", "OPENAI_API_KEY")):
        assert f'providers.{name}.api_key = "<set>"    # env:{variable}' in lines
    assert 'providers.gemini.access_token = "<set>"    # env:VERTEX_TOKEN' in lines
    assert 'providers.openai_compatible.lmstudio.api_key = "<set>"    # env:LMSTUDIO_KEY' in lines
    assert 'server.token_env = "MCP_HTTP_TOKEN"    # file' in lines  # the variable's name, never its value


def test_config_command_json_redacts_every_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    printed = json.loads(run_config_command(tmp_path, monkeypatch, capsys, SECRETS, "--json"))
    providers = printed["config"]["providers"]
    for name in ("ollama", "gemini", "anthropic", "openai"):
        assert providers[name]["api_key"] == "<set>", name
    assert providers["gemini"]["access_token"] == "<set>"
    assert providers["openai_compatible"]["lmstudio"]["api_key"] == "<set>"
    assert printed["sources"]["providers.gemini.access_token"] == "env:VERTEX_TOKEN"


def test_config_command_says_not_set_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    printed = json.loads(run_config_command(tmp_path, monkeypatch, capsys, {}, "--json"))
    providers = printed["config"]["providers"]
    for name in ("ollama", "gemini", "anthropic", "openai"):
        assert providers[name]["api_key"] == "<not set>", name
    assert providers["gemini"]["access_token"] == "<not set>"
    assert providers["openai_compatible"]["lmstudio"]["api_key"] == "<not set>"
    assert not any(key.endswith((".api_key", ".access_token")) for key in printed["sources"])


def test_each_secret_is_read_from_the_variable_its_config_names(tmp_path: Path) -> None:
    # Redaction hides the values; the adapters must still get the right ones (the value, not the name).
    path = tmp_path / "config.toml"
    path.write_text(VERTEX_CONFIG, encoding="utf-8")
    settings = load_settings(path, env=SECRETS)
    providers = settings.providers
    assert providers.gemini.access_token is not None
    assert providers.gemini.access_token.get_secret_value() == SECRETS["VERTEX_TOKEN"]
    assert providers.openai_compatible["lmstudio"].api_key.get_secret_value() == SECRETS["LMSTUDIO_KEY"]
    assert settings.server.token is not None and settings.server.token.get_secret_value() == SECRETS["MCP_HTTP_TOKEN"]
    for name, variable in (("ollama", "OLLAMA_API_KEY"), ("gemini", "GEMINI_API_KEY"),
                           ("anthropic", "ANTHROPIC_API_KEY"), ("openai", "OPENAI_API_KEY")):
        key = settings.provider_settings(name).api_key
        assert key is not None and key.get_secret_value() == SECRETS[variable], name
