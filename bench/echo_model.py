"""An instant Triton model with the generate model's I/O: it answers the prompt back at once.

The gateway benchmark serves it beside the real model, so the figures measure the gateway
and not the model. One final response per request, with every output of the real contract.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        self._final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy()
            prompt = text.reshape(-1)[0]
            outputs = [
                pb_utils.Tensor("text_output", np.array([prompt], dtype=np.object_)),
                pb_utils.Tensor("token_ids", np.array([1], dtype=np.int32)),
                pb_utils.Tensor("finish_reason", np.array([b"length"], dtype=np.object_)),
                pb_utils.Tensor("prompt_tokens", np.array([1], dtype=np.int32)),
                pb_utils.Tensor("completion_tokens", np.array([1], dtype=np.int32)),
            ] + [
                pb_utils.Tensor(name, np.array([0.0], dtype=np.float32))
                for name in ("queue_ms", "first_token_ms", "total_ms")
            ]
            request.get_response_sender().send(
                pb_utils.InferenceResponse(output_tensors=outputs), flags=self._final
            )
