"""Settings: the TOML file merged with the environment variables the SDKs already use.

This is the only module that reads `os.environ`. The file never holds a secret: a provider
names the variable its key is in (`api_key_env`), and the key is kept as a `SecretStr`
that only the adapter unwraps. Every value remembers where it came from, so
`mcp-llm config` can show each one with its source and with secrets redacted.
"""

from __future__ import annotations

import os
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, field_validator

from mcp_llm.errors import ConfigError

OLLAMA_LOCAL_ENDPOINT = "http://localhost:11434"
OLLAMA_CLOUD_ENDPOINT = "https://ollama.com"
# Prefixes the registry routes by itself: an OpenAI-compatible endpoint named so would never be reached.
RESERVED_ENDPOINT_NAMES = frozenset({"ollama", "gemini", "vertex", "anthropic", "openai", "client"})
# Where people run local model servers, each on its usual loopback port: the endpoint name a found
# server's models get (`llamacpp/<model>`) and its OpenAI-compatible base URL. Ollama is looked for at
# providers.ollama's own endpoint. MCP_LLM_DISCOVERY replaces this list (tests point it at their fakes).
DISCOVERY_SERVERS = {
    "llamacpp": "http://127.0.0.1:8080/v1",  # llama.cpp's llama-server (its default port)
    "lmstudio": "http://127.0.0.1:1234/v1",  # LM Studio's local server
    "vllm": "http://127.0.0.1:8000/v1",  # vLLM (`vllm serve`)
}
DISCOVERY_ENV = "MCP_LLM_DISCOVERY"


class _Section(BaseModel):
    """A config table: unknown keys are errors, so a typo is reported, not ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Defaults(_Section):
    model: str = ""
    vision_model: str = ""
    fallback: list[str] = Field(default_factory=list)
    timeout_s: float = Field(default=120.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    first_response_timeout_s: float | None = Field(default=None, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    retry_after_max_s: float = Field(default=30.0, ge=0)
    max_repairs: int = Field(default=2, ge=0, le=10)
    circuit_failures: int = Field(default=5, ge=1)
    circuit_cooldown_s: float = Field(default=30.0, ge=0)


class ModelEntry(_Section):
    id: str
    label: str | None = None
    vision: bool = False
    enabled: bool = True
    fallback: list[str] = Field(default_factory=list)


class _Provider(_Section):
    endpoint: str | None = None
    api_key_env: str = ""
    concurrency: int = Field(default=4, ge=1, le=4096)
    models: list[ModelEntry] = Field(default_factory=list)
    _api_key: SecretStr | None = PrivateAttr(default=None)

    @property
    def api_key(self) -> SecretStr | None:
        return self._api_key

    @property
    def has_api_key(self) -> bool:
        return self._api_key is not None


class OllamaSettings(_Provider):
    use_cloud: bool = False
    api_key_env: str = "OLLAMA_API_KEY"
    _env_host: str | None = PrivateAttr(default=None)

    @property
    def effective_endpoint(self) -> str:
        """Cloud: `endpoint` or ollama.com. Local: `endpoint`, else `$OLLAMA_HOST`, else localhost."""
        if self.use_cloud:
            return normalize_ollama_host(self.endpoint or OLLAMA_CLOUD_ENDPOINT)
        return normalize_ollama_host(self.endpoint or self._env_host or OLLAMA_LOCAL_ENDPOINT)

    @property
    def sends_api_key(self) -> bool:
        """Only Ollama Cloud gets the key; a local server never sees it."""
        return self.use_cloud and self.has_api_key


class GeminiSettings(_Provider):
    backend: Literal["api", "vertex"] = "api"
    api_key_env: str = "GEMINI_API_KEY"
    project: str | None = None
    location: str | None = None
    access_token_env: str = ""
    locations: dict[str, str] = Field(default_factory=dict)
    _access_token: SecretStr | None = PrivateAttr(default=None)

    @property
    def access_token(self) -> SecretStr | None:
        """Vertex AI: an OAuth access token from the variable `access_token_env` names, if set."""
        return self._access_token

    def location_for(self, model: str) -> str:
        """Vertex AI: the model's own location if it has one, else `location`, else `global`."""
        return self.locations.get(model) or self.location or "global"


class AnthropicSettings(_Provider):
    api_key_env: str = "ANTHROPIC_API_KEY"


# How far an OpenAI-style server enforces a schema: `json_schema` (response_format json_schema, a grammar
# or strict decoding), `json_object` (JSON mode: any JSON object), `none` (the prompt alone). The adapter
# steps down by itself, per model, when the server refuses response_format with a 400.
StructuredOutput = Literal["json_schema", "json_object", "none"]


class OpenAISettings(_Provider):
    api_key_env: str = "OPENAI_API_KEY"
    structured_output: StructuredOutput = "json_schema"


class CompatibleEndpoint(_Provider):
    endpoint: str  # type: ignore[assignment]
    api_key_env: str = ""
    models: list[str] = Field(default_factory=list)  # type: ignore[assignment]
    structured_output: StructuredOutput = "json_schema"


class ClientSettings(_Section):
    """The MCP client's own model, through sampling: what to ask the client for."""

    as_fallback: bool = False
    hints: list[str] = Field(default_factory=list)
    cost_priority: float | None = Field(default=None, ge=0, le=1)
    speed_priority: float | None = Field(default=None, ge=0, le=1)
    intelligence_priority: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int = Field(default=4096, ge=1)  # sampling needs one; a call's max_tokens wins


class Providers(_Section):
    ollama: OllamaSettings = Field(default_factory=OllamaSettings)
    gemini: GeminiSettings = Field(default_factory=GeminiSettings)
    anthropic: AnthropicSettings = Field(default_factory=AnthropicSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    openai_compatible: dict[str, CompatibleEndpoint] = Field(default_factory=dict)
    client: ClientSettings = Field(default_factory=ClientSettings)

    @field_validator("openai_compatible")
    @classmethod
    def _endpoint_names(cls, endpoints: dict[str, CompatibleEndpoint]) -> dict[str, CompatibleEndpoint]:
        for name in endpoints:
            _check_endpoint_name(name)
        return endpoints


def _check_endpoint_name(name: str) -> None:
    """`<name>/<model>` ids: a name must not be a built-in prefix, which would win the routing."""
    if name in RESERVED_ENDPOINT_NAMES:
        raise ValueError(f"{name!r} is a built-in provider prefix; give this endpoint another name")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"{name!r}: an endpoint name is letters, digits, - and _ (it starts model ids)")


class DiscoverySettings(_Section):
    """Local model servers looked for when a call names no model and none is configured (zero_config.py)."""

    enabled: bool = True
    ollama: bool = True  # look for Ollama at providers.ollama's endpoint
    servers: dict[str, str] = Field(default_factory=lambda: dict(DISCOVERY_SERVERS))
    timeout_s: float = Field(default=1.0, gt=0, le=30)

    @field_validator("servers")
    @classmethod
    def _servers(cls, servers: dict[str, str]) -> dict[str, str]:
        for name, url in servers.items():
            _check_endpoint_name(name)
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{name} = {url!r}: a server is an http(s) base URL, e.g. http://127.0.0.1:8080/v1")
        return servers


class ImageSettings(_Section):
    roots: list[Path] = Field(default_factory=lambda: [Path.home()])
    max_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    max_pixels: int = Field(default=4096 * 4096, gt=0)
    allow_urls: bool = False
    allow_private_urls: bool = False  # URLs may reach private, loopback and link-local hosts (never metadata)

    @field_validator("roots")
    @classmethod
    def _expand(cls, roots: list[Path]) -> list[Path]:
        return [Path(os.path.expanduser(str(r))).resolve() for r in roots]


class LimitSettings(_Section):
    """Bounds on what a caller's schema and a model's reply may cost, checked before the work is done."""

    schema_max_bytes: int = Field(default=2_097_152, ge=256)
    schema_max_depth: int = Field(default=64, ge=4, le=256)
    schema_max_refs: int = Field(default=20_000, ge=0)
    schema_max_expansion: int = Field(default=2_000, ge=10)
    reply_max_bytes: int = Field(default=1_000_000, ge=1_024)
    reply_max_depth: int = Field(default=64, ge=4, le=200)
    validation_timeout_s: float = Field(default=5.0, gt=0)


class ServerSettings(_Section):
    transport: Literal["stdio", "http"] = "stdio"
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    token_env: str = ""
    # Over HTTP, besides the bound address (and every loopback name when it is loopback): the Host
    # and Origin headers to accept, e.g. a name in front of a proxy ("mcp.example:*", "https://mcp.example")
    allowed_hosts: list[str] = Field(default_factory=list)
    allowed_origins: list[str] = Field(default_factory=list)
    _token: SecretStr | None = PrivateAttr(default=None)

    @property
    def token(self) -> SecretStr | None:
        """The bearer token HTTP clients must send, read from the variable `token_env` names."""
        return self._token


class Settings(_Section):
    defaults: Defaults = Field(default_factory=Defaults)
    aliases: dict[str, str] = Field(default_factory=dict)
    providers: Providers = Field(default_factory=Providers)
    images: ImageSettings = Field(default_factory=ImageSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    discovery: DiscoverySettings = Field(default_factory=DiscoverySettings)
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)
    _path: Path | None = PrivateAttr(default=None)

    @property
    def path(self) -> Path | None:
        """The config file these settings were read from, if any."""
        return self._path

    def source_of(self, dotted_key: str) -> str:
        """Where a value came from: `file`, `env:NAME` or `default`."""
        return self._sources.get(dotted_key, "default")

    def provider_settings(self, name: str) -> _Provider | None:
        value = getattr(self.providers, name, None)
        return value if isinstance(value, _Provider) else None

    def add_discovered_endpoint(self, name: str, url: str) -> str:
        """Make a local OpenAI-compatible server found at `url` routable, for the rest of the process:
        the endpoint already at that URL (configured, or found before), else a new one named `name`,
        or `name-local` (`-local2`…) when a configured endpoint elsewhere has that name. Returns its name."""
        endpoints = self.providers.openai_compatible
        for existing, endpoint in endpoints.items():
            if same_url(endpoint.endpoint, url):
                return existing
        chosen, n = name, 1
        while chosen in endpoints:
            n += 1
            chosen = f"{name}-local" + (str(n - 1) if n > 2 else "")
        endpoints[chosen] = CompatibleEndpoint(endpoint=url)
        self._sources[f"providers.openai_compatible.{chosen}"] = "discovered"
        return chosen


def same_url(a: str, b: str) -> bool:
    """Two base URLs of one server: `localhost` is 127.0.0.1, a trailing slash does not count."""

    def norm(url: str) -> str:
        return url.strip().rstrip("/").lower().replace("://localhost", "://127.0.0.1")

    return norm(a) == norm(b)


def normalize_ollama_host(host: str) -> str:
    """`OLLAMA_HOST` forms → a full base URL, by the ollama SDK's own rules (ollama/_client.py, _parse_host).

    No scheme means port 11434; `http://h` means port 80 and `https://h` 443, as the SDK and
    the ollama CLI read them. `0.0.0.0` (a bind address, often set for the server) becomes 127.0.0.1.
    """
    host = host.strip()
    scheme, sep, rest = host.partition("://")
    if not sep:
        scheme, rest = "http", host
    default_port = {"http": 80, "https": 443}.get(scheme, 11434) if sep else 11434
    hostport, _, path = rest.partition("/")
    path = path.rstrip("/")
    if hostport.startswith("["):  # an IPv6 literal
        address, _, after = hostport[1:].partition("]")
        name, port = f"[{address}]", after.removeprefix(":")
    else:
        name, _, port = hostport.partition(":")
    if name in ("", "0.0.0.0"):
        name = "127.0.0.1"
    return f"{scheme}://{name}:{port or default_port}" + (f"/{path}" if path else "")


def default_config_path(env: dict[str, str] | None = None) -> Path:
    """The user config dir, as each platform keeps it: `…/mcp-llm/config.toml`."""
    env = os.environ if env is None else env
    if sys.platform == "win32":
        base = Path(env.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "mcp-llm" / "config.toml"


@dataclass
class _Loaded:
    data: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def _read_file(explicit: str | os.PathLike[str] | None, env: dict[str, str]) -> _Loaded:
    if explicit is not None:
        path, must_exist = Path(explicit).expanduser(), True
    elif env.get("MCP_LLM_CONFIG"):
        path, must_exist = Path(env["MCP_LLM_CONFIG"]).expanduser(), True
    else:
        path, must_exist = default_config_path(env), False
    if not path.is_file():
        if must_exist:
            raise ConfigError(
                f"Config file {path} does not exist.",
                hint="Check --config / MCP_LLM_CONFIG, or copy config.example.toml there.",
            )
        return _Loaded()
    try:
        raw = path.read_bytes()
    except OSError as exc:  # unreadable: permissions, a directory, an I/O error
        raise ConfigError(f"Config file {path} cannot be read: {exc.strerror or exc}.",
                          hint="Check its permissions, or point --config / MCP_LLM_CONFIG at another file.") from None
    try:
        text = raw.decode("utf-8-sig")  # a leading BOM (Windows editors write one) is not an error
    except UnicodeDecodeError as exc:  # TOML is UTF-8 by definition; tomllib would raise this bare
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"Config file {path} is not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line} cannot be decoded.",
            hint="Save it as UTF-8 (TOML files are UTF-8; an editor's \"UTF-16\" or \"Latin-1\" will not do).",
        ) from None
    try:
        return _Loaded(tomllib.loads(text), path)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Config file {path} is not valid TOML: {exc}.", hint="Fix the line it names.") from exc


def dotted_items(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Every table and value of nested data under its dotted key (`providers.ollama.endpoint`)."""
    items: list[tuple[str, Any]] = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        items.append((dotted, value))
        if isinstance(value, dict):
            items.extend(dotted_items(value, dotted + "."))
    return items


def _explain(exc: ValidationError, path: Path | None) -> ConfigError:
    where = f" in {path}" if path else ""
    problems = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"])
        problem = f"`{key}`: {err['msg']}"
        if err["type"] == "extra_forbidden":
            problem = f"`{key}` is not a config key" + _did_you_mean(err["loc"])
        problems.append(problem)
    return ConfigError(
        f"Invalid config{where}: " + "; ".join(problems) + ".",
        hint="See config.example.toml for every key and its type.",
    )


def _did_you_mean(loc: tuple[Any, ...]) -> str:
    """A typo's closest key in the same table (`defaults.modle` → `model`)."""
    import difflib

    model: Any = Settings
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if isinstance(model, type) else None
        annotation = field.annotation if field else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _first_env(env: dict[str, str], *names: str) -> tuple[str, str] | None:
    for name in names:
        if name and env.get(name):
            return name, env[name]
    return None


def _discovery_from_env(data: dict[str, Any], env: dict[str, str], sources: dict[str, str]) -> None:
    """MCP_LLM_DISCOVERY: `off`, or the servers to look for as `name=url,name=url` (the file's values win)."""
    value = env.get(DISCOVERY_ENV, "").strip()
    if not value:
        return
    table = data.get("discovery")
    discovery = table if isinstance(table, dict) else {}
    if value.lower() in ("off", "0", "false", "no", "none"):
        if "enabled" not in discovery:
            data["discovery"] = {**discovery, "enabled": False}
            sources["discovery.enabled"] = f"env:{DISCOVERY_ENV}"
        return
    servers: dict[str, str] = {}
    for item in value.split(","):
        name, sep, url = item.strip().partition("=")
        if not (sep and name.strip() and url.strip()):
            raise ConfigError(f"{DISCOVERY_ENV}={value!r}: {item.strip()!r} is not name=url.",
                              hint=f"Set {DISCOVERY_ENV} to `off`, or to e.g. llamacpp=http://127.0.0.1:8080/v1.")
        servers[name.strip()] = url.strip()
    if "servers" not in discovery:
        data["discovery"] = {**discovery, "servers": servers}
        sources["discovery.servers"] = f"env:{DISCOVERY_ENV}"


def load_settings(
    config_path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None
) -> Settings:
    """Read the config file (if any) and the environment; raise ConfigError naming the bad key."""
    env = dict(os.environ) if env is None else env
    loaded = _read_file(config_path, env)
    data = loaded.data
    sources = {key: "file" for key, _ in dotted_items(data)}

    gemini_raw = data.get("providers", {}).get("gemini", {})
    if "backend" not in gemini_raw and env.get("GOOGLE_GENAI_USE_VERTEXAI", "").lower() in ("1", "true", "yes"):
        data.setdefault("providers", {}).setdefault("gemini", {})["backend"] = "vertex"
        sources["providers.gemini.backend"] = "env:GOOGLE_GENAI_USE_VERTEXAI"
    for key, var in (("project", "GOOGLE_CLOUD_PROJECT"), ("location", "GOOGLE_CLOUD_LOCATION")):
        if key not in gemini_raw and env.get(var):
            data.setdefault("providers", {}).setdefault("gemini", {})[key] = env[var]
            sources[f"providers.gemini.{key}"] = f"env:{var}"

    _discovery_from_env(data, env, sources)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, loaded.path) from None

    ollama = settings.providers.ollama
    if env.get("OLLAMA_HOST"):
        ollama._env_host = env["OLLAMA_HOST"]
        if not ollama.endpoint and not ollama.use_cloud:
            sources["providers.ollama.endpoint"] = "env:OLLAMA_HOST"

    key_vars: dict[str, tuple[str, ...]] = {
        "ollama": (ollama.api_key_env,),
        "gemini": (settings.providers.gemini.api_key_env, "GEMINI_API_KEY", "GOOGLE_API_KEY"),
        "anthropic": (settings.providers.anthropic.api_key_env, "ANTHROPIC_API_KEY"),
        "openai": (settings.providers.openai.api_key_env, "OPENAI_API_KEY"),
    }
    for name, variables in key_vars.items():
        found = _first_env(env, *variables)
        if found:
            provider = settings.provider_settings(name)
            assert provider is not None
            provider._api_key = SecretStr(found[1])
            sources[f"providers.{name}.api_key"] = f"env:{found[0]}"
    for name, endpoint in settings.providers.openai_compatible.items():
        found = _first_env(env, endpoint.api_key_env)
        if found:
            endpoint._api_key = SecretStr(found[1])
            sources[f"providers.openai_compatible.{name}.api_key"] = f"env:{found[0]}"

    access_token = _first_env(env, settings.providers.gemini.access_token_env)
    if access_token:
        settings.providers.gemini._access_token = SecretStr(access_token[1])
        sources["providers.gemini.access_token"] = f"env:{access_token[0]}"

    token = _first_env(env, settings.server.token_env)
    if token:
        settings.server._token = SecretStr(token[1])
    settings._sources = sources
    settings._path = loaded.path
    return settings


def describe(settings: Settings) -> dict[str, Any]:
    """The effective config as plain data, with `api_key` shown only as set / not set."""
    out = settings.model_dump(mode="json", by_alias=True)
    for name in ("ollama", "gemini", "anthropic", "openai"):
        provider = settings.provider_settings(name)
        assert provider is not None
        out["providers"][name]["api_key"] = "<set>" if provider.has_api_key else "<not set>"
    out["providers"]["gemini"]["access_token"] = "<set>" if settings.providers.gemini.access_token else "<not set>"
    out["providers"]["ollama"]["effective_endpoint"] = settings.providers.ollama.effective_endpoint
    for name, endpoint in settings.providers.openai_compatible.items():
        out["providers"]["openai_compatible"][name]["api_key"] = "<set>" if endpoint.has_api_key else "<not set>"
    return out
