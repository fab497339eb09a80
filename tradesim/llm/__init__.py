"""The one LLM gateway: providers, cache and replay, budget, structured output, journal."""
