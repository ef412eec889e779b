"""One request while the engine runs it: its decoding state and its unsent responses."""

from __future__ import annotations

from workers.detokenizer import Decoder, IncrementalDetokenizer
from workers.requests import Chunk, GenerationRequest, Sink
from workers.sampling import make_rng
from workers.stops import StopMatcher


class Sequence:
    """Written by its lane's thread; the `out_*` fields and the flags below them are shared
    with the outbox's threads, under the outbox's lock."""

    def __init__(
        self,
        request: GenerationRequest,
        sink: Sink,
        prompt_ids: list[int],
        tokenizer: Decoder,
        now: float,
    ) -> None:
        self.request, self.sink, self.prompt_ids = request, sink, prompt_ids
        self.params = request.params
        self.rng = make_rng(request.params.seed)
        self.detok = IncrementalDetokenizer(tokenizer, prompt_ids)
        self.stops = StopMatcher(request.params.stop)
        self.generated: list[int] = []
        self.pending = -1  # sampled token not yet fed to the model
        self.text = ""  # generated but not yet sent
        self.ids: list[int] = []
        self.finish_reason = ""
        self.submitted, self.started, self.first_token = now, 0.0, 0.0
        self.last_sent = now
        self.sent_any = False
        # Shared with the outbox thread (under its lock): what is buffered for the client.
        self.out_text = ""
        self.out_ids: list[int] = []
        self.out_final: Chunk | None = None
        self.queued = False  # waiting in the outbox
        self.sending = False  # an outbox thread is sending for it
        # Where the first response ends in the buffer (text, ids); (-1, -1) once it is sent.
        self.first_cut: tuple[int, int] | None = None
        self.probe = False  # the outbox should ask whether the client went away
        self.gone = False  # the client went away or its sink failed (set by the outbox)
        self.closed = False  # the final response was delivered

    def finish(self, now: float) -> Chunk:
        """The final response's outcome; text held back for a stop string joins `text`."""
        if self.finish_reason != "stop":
            self.text += self.stops.flush()
        started = self.started or now
        return Chunk(
            final=True,
            finish_reason=self.finish_reason,
            prompt_tokens=len(self.prompt_ids),
            completion_tokens=len(self.generated),
            timings={
                "queue_ms": round((started - self.submitted) * 1000, 3),
                "first_token_ms": round(((self.first_token or now) - self.submitted) * 1000, 3),
                "total_ms": round((now - self.submitted) * 1000, 3),
            },
        )
