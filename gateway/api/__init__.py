"""The HTTP API: a package per version (`v1`, `v2`, `openai`) with its routes and schemas,
the admin and operations routes, and the fast route class of the generation endpoints."""
