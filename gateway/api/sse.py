"""Server-sent events: the headers every streamed answer carries."""

from __future__ import annotations

# No caching on the way, and no buffering in nginx (which would hold tokens back).
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
