"""`/v1`: generate and the API-key token exchange."""
