"""Identity: access tokens (issued here or by an external provider) and API keys."""
