"""The floor for a Python gateway: the least one can do between HTTP and Triton.

A bare ASGI app on the gateway's own server stack (uvicorn with uvloop and httptools, no
access log) and the gateway's own Triton client
(`gateway.triton.pool.Endpoint`, kept streams): it reads the JSON body, makes the same Triton
request the gateway makes, and answers the completion as JSON. No framework, no
authentication, no rate limit, no metrics, no logs, no validation beyond what it needs to run.
`bench.gateway` measures it beside Triton called directly and the real gateway, so the table
shows how much of what the gateway adds is the Python HTTP-to-gRPC hop itself and how much is
its features. Not for serving anything.

    python -m bench.floor --port 8090 --grpc 127.0.0.1:8001
"""

from __future__ import annotations

from gateway.triton.grpc_setup import load_grpc

load_grpc()  # as `python -m gateway` does: gRPC's client setting, before tritonclient loads it

import argparse
import json
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send

from gateway.triton.pool import Endpoint
from gateway.triton.protocol import GenerateCall, infer_request, parse_response


class Floor:
    def __init__(self, grpc_url: str) -> None:
        self.grpc_url = grpc_url
        self.endpoint: Endpoint | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.endpoint = Endpoint(self.grpc_url)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self.endpoint is not None:
                        await self.endpoint.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            payload = json.loads(body)
            call = GenerateCall(
                model=payload["model"],
                version=int(payload["version"]),
                prompt=payload["prompt"],
                max_tokens=int(payload["max_tokens"]),
                temperature=float(payload.get("temperature", 1.0)),
                stream=False,
            )
        except (ValueError, KeyError, TypeError) as exc:
            await _answer(send, 400, {"error": f"bad request: {exc}"})
            return
        assert self.endpoint is not None, "lifespan startup ran first"
        text = []
        async for response in self.endpoint.stream(infer_request(call), timeout_s=60):
            text.append(parse_response(response).text)
        await _answer(send, 200, {"completion": "".join(text)})


async def _answer(send: Send, status: int, document: dict[str, Any]) -> None:
    body = json.dumps(document).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc", required=True, help="Triton's gRPC address, host:port")
    args = parser.parse_args()
    uvicorn.run(
        Floor(args.grpc),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        http="httptools",  # the gateway's own server stack
    )


if __name__ == "__main__":
    main()
