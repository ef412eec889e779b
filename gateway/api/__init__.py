"""The HTTP API, one module per version."""
