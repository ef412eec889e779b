"""Tollgate gateway: the authenticated, rate-limited, versioned generation API."""
