"""mcp_llm: schema-valid answers from any LLM, for any MCP client."""

__version__ = "0.1.0"
