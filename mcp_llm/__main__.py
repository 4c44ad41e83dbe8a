from mcp_llm.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
