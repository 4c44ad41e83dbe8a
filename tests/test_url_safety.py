"""Image URLs cannot reach private networks (SSRF): each attack, through analyze_image and a real
MCP client, in a network namespace of its own where a web server listens on every address and
records where each request arrived (tests/netns_ssrf.py runs inside it; nothing leaves loopback).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.netns import needs_netns, run_in_netns
from tests.netns_ssrf import ATTACKS, HOSTS, PRIVATE_ADDRESSES, PUBLIC

pytestmark = needs_netns

PUBLIC_LOCAL = {PUBLIC, f"::ffff:{PUBLIC}"}

EXPECTED = {
    "loopback": "127.0.0.1, a loopback address",
    "decimal": "number in an unusual form",
    "hex": "number in an unusual form",
    "octal": "number in an unusual form",
    "short": "number in an unusual form",
    "localhost": "a loopback address",
    "localhost-dot": "a loopback address",
    "name-to-loopback": "sneaky.test (127.0.0.1), a loopback address",
    "10.x": "10.0.0.1, a private (non-public) address",
    "172.16.x": "172.16.0.1, a private (non-public) address",
    "192.168.x": "192.168.0.1, a private (non-public) address",
    "metadata": "the cloud metadata service",
    "ipv6-loopback": "::1, a loopback address",
    "ipv4-mapped": "(IPv4-mapped) wrapping 127.0.0.1, a loopback address",
    "ipv4-mapped-hex": "(IPv4-mapped) wrapping 127.0.0.1",
    "6to4": "(6to4) wrapping 127.0.0.1",
    "nat64": "(NAT64) wrapping 169.254.169.254, the cloud metadata service",
    "unspecified": "the unspecified address",
    "credentials": "user name or password",
    "redirect-to-loopback": "points to 127.0.0.1, a loopback address",
    "redirect-to-metadata": "the cloud metadata service",
    "redirect-to-name": "sneaky.test (127.0.0.1), a loopback address",
    "redirect-loop": "redirects more than 3 times",
    "too-big": "over the 0.3 MB limit",
    "not-an-image": "not an image",
    "https-wrong-name": "TLS certificate does not check out",
}
REDIRECTS = {"redirect-to-loopback", "redirect-to-metadata", "redirect-to-name", "redirect-loop"}


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return run_in_netns("tests.netns_ssrf", tmp_path_factory.mktemp("netns"),
                        addresses=[PUBLIC, *PRIVATE_ADDRESSES], hosts=HOSTS)


def test_every_attack_has_an_expectation() -> None:
    assert set(EXPECTED) == set(ATTACKS)


@pytest.mark.parametrize("case", sorted(ATTACKS))
def test_attack_is_refused_with_a_clear_error_and_the_next_call_works(outcome: Any, case: str) -> None:
    result = outcome["tool"][case]
    assert result["is_error"], result["text"]
    assert EXPECTED[case] in result["text"], result["text"]
    assert "refused" in result["text"] or case in {"redirect-loop", "too-big", "not-an-image", "https-wrong-name"}
    # nothing reached any address but the public one: refused before connecting, redirects included
    assert all(hit["local"] in PUBLIC_LOCAL for hit in result["hits"]), result["hits"]
    if case in REDIRECTS:
        assert result["hits"] and all(hit["host"] == "public.test" for hit in result["hits"])
        assert len(result["hits"]) <= 4  # the first request and at most 3 redirects
    assert result["next_ok"], f"the call after {case} failed"


def test_a_public_host_is_fetched_from_the_checked_address_with_its_own_name(outcome: Any) -> None:
    (hit,) = outcome["good_hits"]
    assert hit["local"] in PUBLIC_LOCAL and hit["host"] == "public.test"
    assert not outcome["fake_errors"]


def test_tls_to_the_pinned_address_still_checks_the_certificate_against_the_name(outcome: Any) -> None:
    assert outcome["direct"]["https-right-name"] == {"ok": True}
    wrong = outcome["direct"]["https-wrong-name"]
    assert not wrong["ok"] and "TLS certificate" in wrong["text"]


def test_allow_private_urls_lets_a_lan_host_through_but_never_the_metadata_service(outcome: Any) -> None:
    lan = outcome["private_allowed"]["lan"]
    assert not lan["is_error"], lan["text"]
    assert [hit["local"] for hit in lan["hits"]] == ["::ffff:10.0.0.1"]
    metadata = outcome["private_allowed"]["metadata-still"]
    assert metadata["is_error"] and "cloud metadata service" in metadata["text"] and not metadata["hits"]
    assert metadata["next_ok"]

