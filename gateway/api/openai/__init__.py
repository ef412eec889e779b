"""The OpenAI-compatible API: `/v1/completions` and `/v1/models`."""
