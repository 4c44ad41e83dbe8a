"""Loopback servers that speak each provider's wire protocol, so tests go through the real SDKs."""
