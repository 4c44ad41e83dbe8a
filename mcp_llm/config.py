"""Settings: the TOML file merged with the environment variables the SDKs already use.

This is the only module that reads `os.environ`. The file never holds a secret: a provider
names the variable its key is in (`api_key_env`), and the key is kept as a `SecretStr`
that only the adapter unwraps. Every value remembers where it came from, so
`mcp-llm config` can show each one with its source and with secrets redacted.

The `[providers]` table is built from the provider specs (adapters/providers.py): one table per
spec, its class the one the provider's module defines. What a provider takes from the environment
is named by its spec (its key's variables, the keys a variable may supply, the others it honours);
this module reads those variables and hands the values to the table (`ProviderSection.attach`).
"""

from __future__ import annotations

import functools
import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

from pydantic import BaseModel, Field, PrivateAttr, SecretStr, ValidationError, create_model, field_validator

from mcp_llm.adapters.providers import PROVIDERS, spec_named
from mcp_llm.adapters.spec import ModelEntry, ProviderSection, ProviderSettings, ProviderSpec, Section
from mcp_llm.errors import ConfigError

__all__ = ["DISCOVERY_SERVERS", "ModelEntry", "Providers", "Settings", "describe", "load_settings"]


def reserved_names(specs: tuple[ProviderSpec, ...]) -> frozenset[str]:
    """Prefixes the registry routes by itself: an OpenAI-compatible endpoint named so would never be reached."""
    return frozenset(name for spec in specs for name in spec.route_names())


RESERVED_ENDPOINT_NAMES = reserved_names(PROVIDERS)

# Where people run local model servers, each on its usual loopback port: the endpoint name a found
# server's models get (`llamacpp/<model>`) and its OpenAI-compatible base URL. Ollama is looked for at
# providers.ollama's own endpoint. MCP_LLM_DISCOVERY replaces this list (tests point it at their fakes).
DISCOVERY_SERVERS = {
    "llamacpp": "http://127.0.0.1:8080/v1",  # llama.cpp's llama-server (its default port)
    "lmstudio": "http://127.0.0.1:1234/v1",  # LM Studio's local server
    "vllm": "http://127.0.0.1:8000/v1",  # vLLM (`vllm serve`)
}
DISCOVERY_ENV = "MCP_LLM_DISCOVERY"
DISCOVERED_TABLE = "openai_compatible"  # the table of endpoints a found local server joins


class Defaults(Section):
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


class ProviderTable(NamedTuple):
    """One provider's table as configured: a spec's, or one endpoint of a spec that holds endpoints."""

    spec: ProviderSpec
    name: str  # the provider's name: the spec's, or the endpoint's (`lmstudio`)
    key: str  # its dotted config key: `providers.ollama`, `providers.openai_compatible.lmstudio`
    section: ProviderSection


class Providers(Section):
    """`[providers]`: a table per provider spec, of the class its module defines (see `providers_table`)."""

    specs: ClassVar[tuple[ProviderSpec, ...]] = ()

    if TYPE_CHECKING:  # the fields are the specs' names, made by `providers_table`

        def __getattr__(self, name: str) -> Any: ...

    def tables(self) -> list[ProviderTable]:
        """Every provider's table, in the specs' order (a table of endpoints: each endpoint, in the file's)."""
        tables: list[ProviderTable] = []
        for spec in self.specs:
            value = getattr(self, spec.name)
            if spec.endpoints:
                tables += [ProviderTable(spec, name, f"providers.{spec.name}.{name}", section)
                           for name, section in value.items()]
            else:
                tables.append(ProviderTable(spec, spec.name, f"providers.{spec.name}", value))
        return tables


@functools.cache
def providers_table(specs: tuple[ProviderSpec, ...]) -> type[Providers]:
    """The `[providers]` model for these specs: a field per spec, with its defaults and its own typo errors;
    a table of endpoints is a dict of them whose names must not be a built-in prefix. Made once per tuple
    of specs (the built-in one at import; a test's own once)."""
    reserved = reserved_names(specs)

    def endpoint_names(cls: type[Providers], endpoints: dict[str, Any]) -> dict[str, Any]:
        for name in endpoints:
            _check_endpoint_name(name, reserved)
        return endpoints

    fields: dict[str, Any] = {}
    validators: dict[str, Any] = {}
    for spec in specs:
        if spec.endpoints:
            fields[spec.name] = (dict[str, spec.settings], Field(default_factory=dict))  # type: ignore[name-defined]
            validators[f"_{spec.name}_names"] = field_validator(spec.name)(endpoint_names)
        else:
            fields[spec.name] = (spec.settings, Field(default_factory=spec.settings))
    table = create_model("Providers", __base__=Providers, __module__=__name__, __validators__=validators, **fields)
    table.specs = specs
    return table


def _check_endpoint_name(name: str, reserved: frozenset[str] = RESERVED_ENDPOINT_NAMES) -> None:
    """`<name>/<model>` ids: a name must not be a built-in prefix, which would win the routing."""
    if name in reserved:
        raise ValueError(f"{name!r} is a built-in provider prefix; give this endpoint another name")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"{name!r}: an endpoint name is letters, digits, - and _ (it starts model ids)")


class DiscoverySettings(Section):
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


class ImageSettings(Section):
    roots: list[Path] = Field(default_factory=lambda: [Path.home()])
    max_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    max_pixels: int = Field(default=4096 * 4096, gt=0)
    allow_urls: bool = False
    allow_private_urls: bool = False  # URLs may reach private, loopback and link-local hosts (never metadata)

    @field_validator("roots")
    @classmethod
    def _expand(cls, roots: list[Path]) -> list[Path]:
        return [Path(os.path.expanduser(str(r))).resolve() for r in roots]


class LimitSettings(Section):
    """Bounds on what a caller's schema and a model's reply may cost, checked before the work is done."""

    schema_max_bytes: int = Field(default=2_097_152, ge=256)
    schema_max_depth: int = Field(default=64, ge=4, le=256)
    schema_max_refs: int = Field(default=20_000, ge=0)
    schema_max_expansion: int = Field(default=2_000, ge=10)
    reply_max_bytes: int = Field(default=1_000_000, ge=1_024)
    reply_max_depth: int = Field(default=64, ge=4, le=200)
    validation_timeout_s: float = Field(default=5.0, gt=0)


class BudgetSettings(Section):
    """`[budget]`: what calls may spend, checked before each attempt against its worst case (budget.py)."""

    max_cost_per_call_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    daily_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)  # per UTC day, this process (or fleet)
    # Under a budget, the answer limit a priced attempt is sent when the call sets none, so its worst case is known.
    default_max_tokens: int = Field(default=4096, ge=1, le=1_000_000)


class CacheSettings(Section):
    """`[cache]`: the exact response cache of deterministic calls (response_cache.py)."""

    enabled: bool = True
    ttl_s: float = Field(default=3600.0, gt=0, le=30 * 86_400, allow_inf_nan=False)
    max_entries: int = Field(default=1000, ge=0, le=1_000_000)
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=0)


class ServerSettings(Section):
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

    def attach_token(self, token: SecretStr) -> None:
        """The token, as the loader read it from the variable `token_env` names."""
        self._token = token


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class StateSettings(Section):
    """`[state]`: what replicas share through Redis (circuits, concurrency leases, usage stats; see state.py).
    Without `redis_url_env` it is all kept in this process, as a single server does."""

    redis_url_env: str = ""  # the variable holding `redis://…` (the URL may carry a password: never the file)
    timeout_s: float = Field(default=0.2, gt=0, le=5)  # the most any call waits on Redis before going on locally
    lease_ttl_s: float = Field(default=15.0, ge=0.5, le=3600)  # how long a dead replica's leases outlive it
    key_prefix: str = Field(default="mcp-llm", min_length=1, max_length=64)  # several fleets on one Redis
    _redis_url: SecretStr | None = PrivateAttr(default=None)

    @property
    def redis_url(self) -> SecretStr | None:
        """The Redis URL, as the loader read it from the variable `redis_url_env` names."""
        return self._redis_url

    def attach_url(self, url: SecretStr) -> None:
        self._redis_url = url


if TYPE_CHECKING:
    _BuiltinProviders = Providers
else:
    _BuiltinProviders = providers_table(PROVIDERS)


class Settings(Section):
    specs: ClassVar[tuple[ProviderSpec, ...]] = PROVIDERS  # the providers whose tables `providers` holds
    defaults: Defaults = Field(default_factory=Defaults)
    aliases: dict[str, str] = Field(default_factory=dict)
    providers: _BuiltinProviders = Field(default_factory=_BuiltinProviders)
    images: ImageSettings = Field(default_factory=ImageSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    discovery: DiscoverySettings = Field(default_factory=DiscoverySettings)
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)
    _path: Path | None = PrivateAttr(default=None)

    @property
    def path(self) -> Path | None:
        """The config file these settings were read from, if any."""
        return self._path

    def source_of(self, dotted_key: str) -> str:
        """Where a value came from: `file`, `env:NAME` or `default`."""
        return self._sources.get(dotted_key, "default")

    def record_origin(self, path: Path | None, sources: dict[str, str]) -> None:
        """The file these settings were read from, and where each value came from (the loader's findings)."""
        self._path = path
        self._sources = sources

    def provider_tables(self) -> list[ProviderTable]:
        return self.providers.tables()

    def provider_settings(self, name: str) -> ProviderSettings | None:
        """The table of the provider `name` (a built-in one, or an endpoint) if it is one reached over the
        network; None for the client's own model and for names no table has."""
        for table in self.provider_tables():
            if table.name == name:
                return table.section if isinstance(table.section, ProviderSettings) else None
        return None

    def add_discovered_endpoint(self, name: str, url: str, table: str = DISCOVERED_TABLE) -> str:
        """Make a local OpenAI-compatible server found at `url` routable, for the rest of the process:
        the endpoint already at that URL (configured, or found before), else a new one named `name`,
        or `name-local` (`-local2`…) when a configured endpoint elsewhere has that name. Returns its name."""
        endpoints = getattr(self.providers, table)
        spec = spec_named(table, self.specs)
        for existing, endpoint in endpoints.items():
            if any(same_url(host, url) for host in spec.hosts(endpoint)):  # its endpoint, or one of its hosts
                return existing
        chosen, n = name, 1
        while chosen in endpoints:
            n += 1
            chosen = f"{name}-local" + (str(n - 1) if n > 2 else "")
        endpoints[chosen] = spec.settings.model_validate({"endpoint": url})
        self._sources[f"providers.{table}.{chosen}"] = "discovered"
        return chosen


@functools.cache
def settings_class(specs: tuple[ProviderSpec, ...]) -> type[Settings]:
    """`Settings` with a `[providers]` table for these specs: `Settings` itself for the built-in ones; for
    others (a test's own provider, registered there), a subclass made once. Everything downstream (the
    registry, the router, the tools) reads the specs from the settings it is given."""
    if specs == PROVIDERS:
        return Settings
    table = providers_table(specs)
    made = create_model("Settings", __base__=Settings, __module__=__name__,
                        providers=(table, Field(default_factory=table)))
    made.specs = specs
    return made


def same_url(a: str, b: str) -> bool:
    """Two base URLs of one server: `localhost` is 127.0.0.1, a trailing slash does not count."""

    def norm(url: str) -> str:
        return url.strip().rstrip("/").lower().replace("://localhost", "://127.0.0.1")

    return norm(a) == norm(b)


def default_config_path(env: dict[str, str] | None = None) -> Path:
    """The user config dir, as each platform keeps it: `…/mcp-llm/config.toml`."""
    found: Mapping[str, str] = os.environ if env is None else env
    if sys.platform == "win32":
        base = Path(found.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(found.get("XDG_CONFIG_HOME") or Path.home() / ".config")
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


def _explain(exc: ValidationError, path: Path | None, model: type[Settings]) -> ConfigError:
    where = f" in {path}" if path else ""
    problems = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"])
        problem = f"`{key}`: {err['msg']}"
        if err["type"] == "extra_forbidden":
            problem = f"`{key}` is not a config key" + _did_you_mean(err["loc"], model)
        problems.append(problem)
    return ConfigError(
        f"Invalid config{where}: " + "; ".join(problems) + ".",
        hint="See config.example.toml for every key and its type.",
    )


def _did_you_mean(loc: tuple[Any, ...], settings_model: type[Settings]) -> str:
    """A typo's closest key in the same table (`defaults.modle` → `model`)."""
    import difflib

    model: type[BaseModel] = settings_model
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
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


def _fill_from_env(data: dict[str, Any], env: dict[str, str], sources: dict[str, str],
                   specs: tuple[ProviderSpec, ...]) -> None:
    """Keys a provider's table takes from a variable when the file does not set them (`FromEnv`:
    GOOGLE_CLOUD_PROJECT → providers.gemini.project). A table that is not a table is left to validation."""
    providers = data.get("providers", {})
    if not isinstance(providers, dict):
        return
    for spec in specs:
        table = providers.get(spec.name, {})
        if not isinstance(table, dict):
            continue
        for default in spec.from_env:
            text = env.get(default.variable, "")
            if default.key in table or not text:
                continue
            value = default.convert(text) if default.convert is not None else text
            if value is not None:
                data.setdefault("providers", {}).setdefault(spec.name, {})[default.key] = value
                sources[f"providers.{spec.name}.{default.key}"] = f"env:{default.variable}"


def _attach(table: ProviderTable, env: dict[str, str]) -> dict[str, str]:
    """Hand a provider's table what the environment holds for it: each secret from the variable its table
    names, else from the spec's fallbacks, and the other variables the spec honours. Returns the sources."""
    sources: dict[str, str] = {}
    secrets: dict[str, SecretStr] = {}
    for secret in table.spec.secrets:
        found = _first_env(env, getattr(table.section, secret.variable_field), *secret.fallbacks)
        if found:
            secrets[secret.name] = SecretStr(found[1])
            sources[f"{table.key}.{secret.name}"] = f"env:{found[0]}"
    honoured = {name: env[name] for name in table.spec.env if env.get(name)}
    for key, variable in table.section.attach(secrets, honoured).items():
        sources[f"{table.key}.{key}"] = f"env:{variable}"
    return sources


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
    config_path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None,
    specs: tuple[ProviderSpec, ...] | None = None,
) -> Settings:
    """Read the config file (if any) and the environment; raise ConfigError naming the bad key.
    `specs`: the providers to know (the built-in ones unless given: a test adds its own this way)."""
    env = dict(os.environ) if env is None else env
    model = Settings if specs is None else settings_class(specs)
    loaded = _read_file(config_path, env)
    data = loaded.data
    sources = {key: "file" for key, _ in dotted_items(data)}

    _fill_from_env(data, env, sources, model.specs)
    _discovery_from_env(data, env, sources)
    try:
        settings = model.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, loaded.path, model) from None

    for table in settings.provider_tables():
        sources.update(_attach(table, env))
    token = _first_env(env, settings.server.token_env)
    if token:
        settings.server.attach_token(SecretStr(token[1]))
    _attach_redis_url(settings.state, env, sources)
    settings.record_origin(loaded.path, sources)
    return settings


def _attach_redis_url(state: StateSettings, env: dict[str, str], sources: dict[str, str]) -> None:
    """`[state] redis_url_env`: the URL from that variable. Unset, the replica keeps its state to itself (and
    provider_health says so); not a Redis URL, a config error that never shows the value (it may hold a password)."""
    found = _first_env(env, state.redis_url_env)
    if not found:
        return
    name, url = found[0], found[1].strip()
    if not url.lower().startswith(REDIS_SCHEMES):
        raise ConfigError(f"{name} (named by state.redis_url_env) does not hold a Redis URL.",
                          hint="Set it to redis://[:password@]host:6379/0 (rediss:// for TLS, unix:// for a socket).")
    state.attach_url(SecretStr(url))
    sources["state.redis_url"] = f"env:{name}"


def describe(settings: Settings) -> dict[str, Any]:
    """The effective config as plain data, each secret shown only as set / not set (after its table's
    keys, with what the table works out from them, e.g. Ollama's effective endpoint)."""
    out = settings.model_dump(mode="json", by_alias=True)
    for table in settings.provider_tables():
        shown = out
        for part in table.key.split("."):
            shown = shown[part]
        for secret in table.spec.secrets:
            shown[secret.name] = "<set>" if table.section.secret(secret.name) is not None else "<not set>"
        shown.update(table.section.derived())
    out["state"]["redis_url"] = "<set>" if settings.state.redis_url is not None else "<not set>"
    return out


# Names this module had before each provider's table moved into the provider's own module.
_MOVED = {"OllamaSettings": "ollama", "normalize_ollama_host": "ollama", "GeminiSettings": "gemini",
          "AnthropicSettings": "anthropic", "OpenAISettings": "openai", "CompatibleEndpoint": "openai",
          "StructuredOutput": "openai", "ClientSettings": "sampling"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(f"mcp_llm.adapters.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
