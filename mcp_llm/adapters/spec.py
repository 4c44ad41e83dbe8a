"""What a provider is, stated once: its `ProviderSpec`, and the base of the config table it takes.

A provider is one module under `adapters/` (ollama.py, gemini.py, anthropic.py, openai.py, sampling.py):
its settings class (the pydantic table under `[providers.<name>]`), its adapter, and a `SPEC` naming
its facts — name, label, the model-id prefixes that route to it, the environment variables it
honours, the schema dialect it is sent, what a host is for it, and how its adapter is built.
`providers.py` lists the specs, one line each. Everything that used to keep a table of its own reads
them instead: registry.py (routing, "did you mean", building adapters), config.py (the `[providers]`
table, its secrets and sources, `mcp-llm config`), app.py (listing and health), the router (which
schema dialect a provider is sent).

Nothing here reads the environment. A spec names variables; config.py, the only reader of
`os.environ`, reads them and hands the values to the table through `ProviderSection.attach`, so no
one writes a table's private attributes from outside.

Adding a provider is then one module (settings, adapter, `SPEC`), one line in providers.py, and its
test file. A module imports its SDK inside functions only: the spec list is read at start-up.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

if TYPE_CHECKING:
    from mcp_llm.adapters.base import Health, HostReport, LLMAdapter, ModelInfo, Timeouts


class Section(BaseModel):
    """A config table: unknown keys are errors, so a typo is reported, not ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelEntry(Section):
    id: str
    label: str | None = None
    vision: bool = False
    enabled: bool = True
    fallback: list[str] = Field(default_factory=list)


class TokenPrices(Section):
    """`cost_per_mtok = {input = 0.15, output = 0.6}`: US dollars per million tokens, each way."""

    input: float = Field(ge=0, allow_inf_nan=False)
    output: float = Field(ge=0, allow_inf_nan=False)


class ProviderSection(Section):
    """The base of every `[providers.<name>]` table: how it takes what the environment holds for it.

    `cost_per_mtok` prices the provider's tokens in US dollars per million, one number for every token
    or `{input, output}`, ahead of the price library (cost.py): `0` says a local model is free; unset, a
    provider the library does not price (Ollama, a local server) costs `null`, unknown, never a guess."""

    cost_per_mtok: float | TokenPrices | None = None

    @field_validator("cost_per_mtok", mode="before")
    @classmethod
    def _price(cls, value: Any) -> Any:
        """One clear message for what a price may be (pydantic's own would name each branch of the union)."""
        if value is None or isinstance(value, TokenPrices):
            return value
        if isinstance(value, dict):
            try:
                return TokenPrices.model_validate(value)
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'it'}: {e['msg']}" for e in exc.errors())
                raise ValueError(f"a table of prices is {{input = …, output = …}}, US dollars per million tokens "
                                 f"of 0 or more ({problems})") from None
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
            return float(value)
        raise ValueError(f"{value!r} is not a price: give US dollars per million tokens, a number of 0 or more "
                         "(0 for a free local model), or {input = …, output = …}")

    def attach(self, secrets: Mapping[str, SecretStr], env: Mapping[str, str]) -> dict[str, str]:
        """Take the secrets config.py read for this table (by `Secret.name`) and the values of the other
        variables its spec honours (`ProviderSpec.env`, only those set). Returns the keys whose value now
        comes from a variable, and which (`{"endpoint": "OLLAMA_HOST"}`), for `mcp-llm config`'s sources."""
        return {}

    def secret(self, name: str) -> SecretStr | None:
        """A secret attached by `attach` (`api_key`, `access_token`); None when its variable is unset."""
        return None

    def entries(self) -> list[ModelEntry]:
        """The models this table configures, as written (the registry gives them their full ids)."""
        return []

    def derived(self) -> dict[str, Any]:
        """Values worked out from the table and the environment, shown by `mcp-llm config` after its keys."""
        return {}


class ProviderSettings(ProviderSection):
    """A provider reached over the network: where, with which key (named by variable), how many at once."""

    endpoint: str | None = None
    api_key_env: str = ""
    concurrency: int = Field(default=4, ge=1, le=4096)
    models: list[ModelEntry] = Field(default_factory=list)
    _secrets: dict[str, SecretStr] = PrivateAttr(default_factory=dict)

    def attach(self, secrets: Mapping[str, SecretStr], env: Mapping[str, str]) -> dict[str, str]:
        self._secrets = dict(secrets)
        return {}

    def secret(self, name: str) -> SecretStr | None:
        return self._secrets.get(name)

    @property
    def api_key(self) -> SecretStr | None:
        return self._secrets.get("api_key")

    @property
    def has_api_key(self) -> bool:
        return self.api_key is not None

    def entries(self) -> list[ModelEntry]:
        return list(self.models)


class HostsSettings(ProviderSettings):
    """A provider served from one host or several: `endpoint` (one base URL) or `hosts` (several, one id
    namespace across them; a call goes to a host that has its model, see mcp_llm/hosts.py)."""

    hosts: list[str] = Field(default_factory=list)
    # How often each host is asked again what it serves and has loaded (in the background, never on a call)
    hosts_refresh_s: float = Field(default=5.0, gt=0, le=3600)

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            if not host.strip():
                raise ValueError("a host is a base URL, e.g. http://gpu-a:11434; an empty one is not")
        if len({public_url(host).rstrip("/").lower() for host in hosts}) != len(hosts):
            raise ValueError("a host is listed twice")
        return hosts

    @model_validator(mode="after")
    def _one_way(self) -> HostsSettings:
        if self.hosts and self.endpoint:
            raise ValueError("set `endpoint` (one host) or `hosts` (several), not both")
        return self


def split_credentials(url: str) -> tuple[str, str | None]:
    """A base URL without the `user:password@` it may carry, and the `Authorization` header value those
    make (Basic; None without them). Clients are built on the first and send the second, so credentials
    never ride in a URL that an SDK's log line or exception message could show."""
    parts = urlsplit(url.strip())
    if "@" not in parts.netloc:
        return url.strip(), None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
    return parts._replace(netloc=hostport).geturl(), f"Basic {token}"


def public_url(url: str) -> str:
    """A host as traces, health rows, logs and `mcp-llm config` show it: its base URL without credentials,
    query or fragment (a gateway's `?key=…` is a secret too; what is sent keeps them)."""
    try:
        parts = urlsplit(split_credentials(url)[0])
    except ValueError:
        return "(an endpoint that is not a URL)"
    if not parts.scheme or not parts.netloc:
        return url.split("@")[-1].split("?")[0].split("#")[0]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]+")


def public_text(text: str) -> str:
    """`text` with every URL in it made public (`public_url`): for messages that may name an endpoint as it
    was configured, and for log lines (an HTTP library logs each request's URL)."""
    return URL_IN_TEXT.sub(lambda found: public_url(found.group()), text) if "://" in text else text


def endpoint_only(settings: Any) -> list[str]:
    """The hosts of a provider that has one: its `endpoint` (none configured: none)."""
    endpoint = getattr(settings, "endpoint", None)
    return [endpoint] if endpoint else []


# (the provider's adapter, one of its hosts) → what that host serves and has loaded now
HostReporter = Callable[[Any, str], Awaitable["HostReport"]]


@dataclass(frozen=True)
class Prefix:
    """Ids starting with `text` route to the provider: the rest is the native name (`strip`), or the whole id
    is (`claude-…`). `options` is provider-specific route data the adapter reads from `Request.options`
    (`vertex/` → `{"vertex": True}`: Gemini on Vertex AI whatever the configured backend)."""

    text: str
    strip: bool = True
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Secret:
    """A secret the table takes from the environment: from the variable its field `variable_field` names,
    else the first set of `fallbacks` (the variables the provider's own SDK reads). `name` is the table's
    attribute for it and its key in `mcp-llm config`, which only ever shows `<set>` or `<not set>`."""

    name: str
    variable_field: str
    fallbacks: tuple[str, ...] = ()


API_KEY = Secret("api_key", "api_key_env")


@dataclass(frozen=True)
class FromEnv:
    """A key of the table the environment supplies when the file does not set it (`GOOGLE_CLOUD_PROJECT` →
    `project`). `convert` turns the variable's text into the key's value; None from it: not taken."""

    key: str
    variable: str
    convert: Callable[[str], Any] | None = None


AdapterFactory = Callable[[Any, "Timeouts", str], "LLMAdapter"]  # (its table, timeouts, provider name) → adapter


@dataclass(frozen=True, eq=False)  # one per provider, compared (and hashed) by identity
class ProviderSpec:
    """One provider's facts, each stated once (see the module's docstring)."""

    name: str  # its table `[providers.<name>]`, and the provider's name in routes, traces and health rows
    label: str  # how messages name it ("Gemini")
    settings: type[ProviderSection]  # the table's class (`endpoints`: each endpoint's)
    build: AdapterFactory | None  # None: a known prefix whose adapter this version does not ship
    prefixes: tuple[Prefix, ...] = ()  # tried in order, provider after provider
    ids: tuple[str, ...] = ()  # whole ids that route here by themselves (`client`)
    secrets: tuple[Secret, ...] = (API_KEY,)
    from_env: tuple[FromEnv, ...] = ()  # keys the environment may supply (before the table is validated)
    env: tuple[str, ...] = ()  # other variables it honours, handed to `attach` (`OLLAMA_HOST`)
    schema_dialect: str | None = None  # the schema package's dialect it is sent (`gemini`); None: as is
    hosts: Callable[[Any], list[str]] = endpoint_only  # its table → the base URLs it serves from, in order
    # How one of its hosts is asked what it serves and has loaded (`/api/tags` + `/api/ps`, `/v1/models`), for
    # routing among several (mcp_llm/hosts.py). None: a provider at one address (a cloud API), never discovered.
    host_report: HostReporter | None = None
    # The table holds named endpoints (`[providers.<name>.<endpoint>]`), each a provider of its own under
    # that name, whose ids are `<endpoint>/<model>` (the OpenAI-compatible servers).
    endpoints: bool = False
    # A provider reached through the MCP call itself (the client's own model): whether it works and what it
    # offers depend on the caller, so they are read from the call (`client_call`), never probed or listed.
    call_health: Callable[[Any], Health] | None = None
    call_models: Callable[[Any], list[ModelInfo]] | None = None

    @property
    def call_scoped(self) -> bool:
        return self.call_health is not None

    def model_id(self, native: str, **options: Any) -> str:
        """The id that routes to the provider's model `native` (with these route options): the name itself
        where a prefix is part of it (`claude-…`), else the first prefix with these options (`anthropic/…`,
        `vertex/…` for vertex=True). What its adapter lists a model as."""
        kept = [p for p in self.prefixes if not p.strip and native.startswith(p.text) and dict(p.options) == options]
        if kept:
            return native
        stripped = next(p for p in self.prefixes if p.strip and dict(p.options) == options)
        return stripped.text + native

    def route_names(self) -> list[str]:
        """The names an id can start with that route here (`ollama`, `vertex`, `client`): an endpoint named
        so would never be reached."""
        names = [prefix.text[:-1] for prefix in self.prefixes if prefix.text.endswith("/")]
        return [*names, *self.ids]
