"""Continuous batching: requests join and leave the running batch at every decode step.

The running batch is split into `lanes` sub-batches (one by default), each with its own KV
cache and its own thread. Each turn a lane admits waiting requests into its free slots
(newcomers are prefilled together), runs one decode step for its sequences, samples each row
with the request's own generator, and streams text out through the request's `Sink`, several
tokens per response. Finished and cancelled sequences leave at once, freeing their slot. Past
`max_active`, requests wait in a queue of `max_queue`; past that, `submit` raises
`Overloaded`, which callers turn into 429/503.

Responses leave on threads of their own (`workers.senders`): the decode loop only appends
text to a request's buffer and moves on, and reads from a flag whether its client went away.

Every response also costs CPU on its way (the backend, the server, the client's gRPC), on the
cores that decode. `responses_per_s` is a budget for all streams together: with N streams
running, a stream's responses are at least N / `responses_per_s` apart, so under load packs
grow instead of the response count (the first token still leaves at once, and the final
response whenever the request ends). A stream alone is held back only when its packs come
faster than the whole budget.

Lanes run independently: each one's loop (admit, prefill, decode, sample, send) runs on its
own thread and never waits for the others (ONNX Runtime releases the GIL while it runs, so
one lane samples while another computes). On a CPU, a lane per core with one ONNX Runtime
thread each keeps every core busy on its own rows; one batch spread over the cores by ONNX
Runtime's thread pool instead meets at a barrier after every operator, and lanes stepping in
lock-step would meet at one after every step: a lane delayed by another process on a shared
machine would hold up the others. The slots are shared out among the lanes (`max_active`
split as evenly as it goes), and a lane takes about its fair share of the waiting requests,
so the lanes stay balanced.

A failing request gets its own error and the others continue. If the loop itself dies, every
open request gets an error, `healthy` turns false, new requests are refused and `on_failure`
is called with the reason (the Triton adapter then takes the version out of service).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from workers.kvbatch import KVBatch
from workers.requests import Chunk, EngineStopped, GenerationRequest, Overloaded, Sink
from workers.runtime import Decoder
from workers.sampling import InvalidRequest, choose
from workers.senders import Outbox
from workers.sequence import Sequence

EOT_ID = 0


class Encoded(Protocol):
    @property
    def ids(self) -> list[int]: ...


class Tokenizer(Protocol):
    def encode(self, text: str, /, *, add_special_tokens: bool = True) -> Encoded: ...
    def decode(self, ids: list[int], /, *, skip_special_tokens: bool = True) -> str: ...


@dataclass(frozen=True)
class EngineConfig:
    max_active: int = 32
    max_queue: int = 256
    tokens_per_response: int = 8
    response_interval_s: float = 0.02
    responses_per_s: float = 0.0  # all streams' responses together; 0: no budget
    senders: int = 1  # outbox threads sending responses at the same time
    lanes: int = 1  # sub-batches decoded at the same time (see the module's docstring)


class _Lane:
    """A sub-batch: its sequences, row for row with its KV cache, and the thread that runs it."""

    def __init__(self, index: int, batch: KVBatch, capacity: int) -> None:
        self.index, self.batch, self.capacity = index, batch, capacity
        self.rows: list[Sequence] = []
        self.starting: list[Sequence] = []  # admitted, being prefilled
        self.steps = 0
        self.thread: threading.Thread | None = None


class Engine:
    """Runs submitted requests in continuous batches, one thread per lane (see above)."""

    def __init__(
        self,
        *,
        decoder: Decoder,
        tokenizer: Tokenizer,
        config: EngineConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.decoder, self.tokenizer = decoder, tokenizer
        self._on_failure = on_failure
        self.config = config or EngineConfig()
        self.clock = clock
        lanes, slots = self.config.lanes, self.config.max_active
        if lanes < 1:
            raise ValueError(f"lanes must be at least 1, got {lanes}")
        if lanes > slots:
            raise ValueError(f"{lanes} lanes need at least as many slots, got {slots}")
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._lanes = [
            _Lane(i, KVBatch(decoder.shape), slots // lanes + (i < slots % lanes))
            for i in range(lanes)
        ]
        self._lock = threading.Condition()
        self._running = False
        self._error = ""
        self._outbox: Outbox | None = None

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        return self._running and not self._error

    @property
    def load(self) -> tuple[int, int]:
        """(active sequences, waiting requests)."""
        with self._lock:
            return len(self._active), len(self._waiting)

    @property
    def _active(self) -> list[Sequence]:
        return [sequence for lane in self._lanes for sequence in lane.rows]

    @property
    def _starting(self) -> list[Sequence]:
        return [sequence for lane in self._lanes for sequence in lane.starting]

    def start(self) -> None:
        self._running = True
        self._outbox = Outbox(self.config.senders)
        for lane in self._lanes:
            lane.thread = threading.Thread(
                target=self._loop, args=(lane,), name=f"tollgate-lane-{lane.index}", daemon=True
            )
            lane.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking requests, let active ones finish for up to `timeout`, fail the rest."""
        deadline = self.clock() + timeout
        with self._lock:
            self._running = False
            self._lock.notify_all()
        self._join_lanes(deadline)
        self._fail_all("the engine was stopped")
        if self._outbox is not None:
            self._outbox.close(max(1.0, deadline - self.clock()))

    def _join_lanes(self, deadline: float) -> None:
        """Wait until `deadline` for every lane's thread but the caller's own to end."""
        for lane in self._lanes:
            if lane.thread is not None and lane.thread is not threading.current_thread():
                lane.thread.join(max(0.0, deadline - self.clock()))

    # -- requests ---------------------------------------------------------------------------
    def submit(self, request: GenerationRequest, sink: Sink) -> None:
        """Queue a request; raise InvalidRequest, Overloaded or EngineStopped at once."""
        prompt_ids = self._prompt_ids(request)
        sequence = Sequence(request, sink, prompt_ids, self.tokenizer, self.clock())
        with self._lock:
            if not self._running or self._error:
                raise EngineStopped(self._error or "the engine is not running")
            # Capacity is every slot plus the queue behind them.
            outstanding = len(self._active) + len(self._starting) + len(self._waiting)
            if outstanding >= self.config.max_active + self.config.max_queue:
                running, waiting = len(self._active), len(self._waiting)
                raise Overloaded(f"{running} requests running and {waiting} waiting; retry later")
            self._waiting.append(sequence)
            self._lock.notify()

    def _prompt_ids(self, request: GenerationRequest) -> list[int]:
        context = self.decoder.shape.context_length
        params = request.params.validate(max_new_tokens=context - 1)
        ids = list(self.tokenizer.encode(request.prompt, add_special_tokens=False).ids) or [
            EOT_ID
        ]  # an empty prompt starts a new document
        if len(ids) + 1 > context:
            if not request.truncate:
                raise InvalidRequest(
                    f"the prompt has {len(ids)} tokens and the model's context is {context}: "
                    "shorten it, or ask for truncation"
                )
            ids = ids[-max(1, context - params.max_tokens) :]
        return ids

    # -- the loop (one per lane, each on its own thread) -----------------------------------
    def _loop(self, lane: _Lane) -> None:
        try:
            while True:
                newcomers = self._admit(lane)
                if newcomers is None:
                    return
                self._drop_cancelled(lane)
                if newcomers:
                    self._prefill(lane, newcomers)
                if lane.rows:
                    self._decode(lane)
        except Exception as exc:  # any failure here must reach every open request
            self._fail(f"the generation engine failed: {type(exc).__name__}: {exc}")

    def _fail(self, error: str) -> None:
        """Stop every lane, then answer every open request with the error (first failure only)."""
        with self._lock:
            if self._error:
                return
            self._error = error
            self._lock.notify_all()
        self._join_lanes(self.clock() + 10.0)  # the others leave at their next turn
        self._fail_all(error)
        if self._on_failure is not None:
            self._on_failure(error)

    def _admit(self, lane: _Lane) -> list[Sequence] | None:
        """Take waiting requests into the lane's free slots, about its fair share of them;
        block while the lane and the queue are empty; None means stop."""
        with self._lock:
            while not self._waiting and not lane.rows:
                if not self._running or self._error:
                    return None
                self._lock.wait(0.5)
            if self._error:
                return None
            free = lane.capacity - len(lane.rows)
            taken: list[Sequence] = []
            if free and self._waiting:
                # Share what is running and waiting evenly; a lane behind its share catches
                # up, and every lane with a free slot takes at least one request.
                placed = len(self._active) + len(self._starting)  # other lanes' newcomers too
                share = -(-(placed + len(self._waiting)) // len(self._lanes))
                count = min(free, len(self._waiting), max(1, share - len(lane.rows)))
                taken = [self._waiting.popleft() for _ in range(count)]
                if self._waiting:
                    self._lock.notify()  # another lane may have room for the rest
            # Until prefilled; one whose client already went away never takes a place.
            lane.starting = kept = [s for s in taken if not s.gone]
        now = self.clock()
        for sequence in taken:
            sequence.started = now
            if sequence.gone:
                sequence.finish_reason = "cancelled"
                self._send_final(sequence)
        return kept

    def _prefill(self, lane: _Lane, newcomers: list[Sequence]) -> None:
        ids, mask, positions = KVBatch.prefill_inputs([s.prompt_ids for s in newcomers])
        empty = KVBatch(self.decoder.shape)._empty(len(newcomers), 0)
        logits, present = self.decoder.step(ids, mask, positions, empty)
        with self._lock:
            lane.batch.join(present, mask)
            lane.rows.extend(newcomers)
            lane.starting = []
        self._sample(lane, logits, offset=len(lane.rows) - len(newcomers))
        self._retire(lane)

    def _decode(self, lane: _Lane) -> None:
        mask, positions = lane.batch.decode_inputs()
        ids = np.asarray([[s.pending] for s in lane.rows], dtype=np.int64)
        logits, present = self.decoder.step(ids, mask, positions, lane.batch.past)
        lane.batch.advance(present, mask)
        self._sample(lane, logits, offset=0)
        self._retire(lane)

    def _sample(self, lane: _Lane, logits: np.ndarray, offset: int) -> None:  # type: ignore[type-arg]
        now = self.clock()
        gap = self._response_gap()
        greedy = logits.argmax(axis=-1)  # one call for every greedy row
        for row, sequence in enumerate(lane.rows[offset:]):
            params = sequence.params
            token = int(greedy[row]) if params.greedy else choose(logits[row], params, sequence.rng)
            self._accept(sequence, token, now, gap)

    def _response_gap(self) -> float:
        """The least time between two of a stream's responses: its share of the budget
        (requests answered in one response send nothing until the end, and do not count)."""
        if not self.config.responses_per_s:
            return 0.0
        streams = sum(s.request.stream for lane in self._lanes for s in lane.rows)
        return streams / self.config.responses_per_s

    def _accept(self, sequence: Sequence, token: int, now: float, gap: float) -> None:
        if not sequence.first_token:
            sequence.first_token = now
        if token == EOT_ID:
            sequence.finish_reason = "eos"
            return
        sequence.generated.append(token)
        sequence.ids.append(token)
        text, stopped = sequence.stops.feed(sequence.detok.push(token))
        sequence.text += text
        total = len(sequence.prompt_ids) + len(sequence.generated)
        if stopped:
            sequence.finish_reason = "stop"
        elif (
            len(sequence.generated) >= sequence.params.max_tokens
            or total >= self.decoder.shape.context_length
        ):
            sequence.finish_reason = "length"
        else:
            sequence.pending = token
            # The first token goes out at once (time to first token); then packs of several.
            since = now - sequence.last_sent
            due = not sequence.sent_any or (
                since >= gap
                and (
                    len(sequence.ids) >= self.config.tokens_per_response
                    or since >= self.config.response_interval_s
                )
            )
            if sequence.request.stream and due:
                self._send(sequence, now)

    def _drop_cancelled(self, lane: _Lane) -> None:
        """Retire the lane's sequences whose client went away. Streams are checked after each
        response; every few steps the outbox also asks for the lane's requests that send
        nothing until the end, and the first lane asks for those still waiting for a slot."""
        lane.steps += 1
        if lane.steps % self.config.tokens_per_response == 0 and self._outbox is not None:
            with self._lock:
                quiet = [s for s in lane.rows if not s.request.stream]
                if lane.index == 0:
                    quiet += self._waiting
            self._outbox.probe(quiet)
        for sequence in lane.rows:
            if sequence.gone and not sequence.finish_reason:
                sequence.finish_reason = "cancelled"
        self._retire(lane)

    def _retire(self, lane: _Lane) -> None:
        keep = [i for i, s in enumerate(lane.rows) if not s.finish_reason]
        if len(keep) == len(lane.rows):
            return
        for sequence in lane.rows:
            if sequence.finish_reason:
                self._send_final(sequence)
        with self._lock:
            lane.rows = [lane.rows[i] for i in keep]
        lane.batch.keep(keep)

    # -- responses --------------------------------------------------------------------------
    def _send(self, sequence: Sequence, now: float, final: Chunk | None = None) -> None:
        """Hand what the request has generated since its last response to the outbox."""
        text, ids = sequence.text, sequence.ids
        sequence.text, sequence.ids, sequence.last_sent = "", [], now
        if text or ids or final is not None:
            sequence.sent_any = True
            self._post(sequence, text, ids, final)

    def _post(
        self, sequence: Sequence, text: str, ids: list[int], final: Chunk | None = None
    ) -> None:
        if self._outbox is None:
            raise EngineStopped("the engine is not running")
        self._outbox.post(sequence, text, ids, final)

    def _send_final(self, sequence: Sequence) -> None:
        """The last response: remaining text (all of it when not streaming) and the outcome."""
        now = self.clock()
        self._send(sequence, now, final=sequence.finish(now))

    def _fail_all(self, message: str) -> None:
        with self._lock:
            doomed = self._active + self._starting + list(self._waiting)
            for lane in self._lanes:
                lane.rows, lane.starting = [], []
                lane.batch = KVBatch(self.decoder.shape)
            self._waiting = collections.deque()
        for sequence in doomed:
            self._post(sequence, "", [], Chunk(final=True, error=message, finish_reason="error"))
