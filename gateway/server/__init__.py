"""Server plumbing: the HTTP protocol, disconnects, the Redis line, background jobs and the
pure-ASGI middleware."""
