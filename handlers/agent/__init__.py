"""The agent handler: runners (OpenAI-compatible, Dify, n8n), prompt, memory, tools, streaming."""
