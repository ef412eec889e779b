"""`python -m gateway`."""

from gateway.triton.grpc_setup import load_grpc

load_grpc()  # before the commands below import gRPC (through tritonclient)

from gateway.cli import app  # noqa: E402

app(prog_name="python -m gateway")
