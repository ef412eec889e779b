"""The response senders: threads that hand each request's buffered text to the server.

Handing a response to a client costs an IPC round trip in Triton's python backend, longer than
a decode step of a small model, so the decode loop only appends text to a per-request buffer
and moves on, and several threads (`senders` of them) wait on those round trips at once (never
two for one request). When responses cannot keep up, whatever a request has buffered goes out
as one response, so the number of responses adapts to load instead of throttling decoding.
Asking a client whether it went away is an IPC as well; those threads ask after each streamed
response, and the loop reads the answer from a flag.
"""

from __future__ import annotations

import collections
import threading
import time

from workers.requests import Chunk
from workers.sequence import Sequence


class Outbox:
    """Delivers responses on threads of their own, so the decode loop never waits on a client.

    `post` appends text to a request's buffer and queues the request once; a thread sends
    everything buffered for it as one response. After a streamed response, and whenever asked
    (`probe`), it checks whether the client went away and sets `gone` for the loop to read.
    Each send waits for the server to take the response (an IPC round trip), so several
    threads send at once, but never two for the same request: its responses leave in order,
    and nothing follows its final response.
    """

    def __init__(self, threads: int = 1) -> None:
        self._ready: collections.deque[Sequence] = collections.deque()
        self._lock = threading.Condition()
        self._closing = False
        self._threads = [
            threading.Thread(target=self._run, name=f"tollgate-responses-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def post(
        self, sequence: Sequence, text: str, ids: list[int], final: Chunk | None = None
    ) -> None:
        with self._lock:
            if sequence.first_cut is None and final is None and (text or ids):
                # The first text leaves as a response of its own, even if more piles up
                # behind it before a thread gets to it (time to first token).
                sequence.first_cut = (len(sequence.out_text) + len(text), len(ids))
            sequence.out_text += text
            sequence.out_ids.extend(ids)
            if final is not None and sequence.out_final is None:
                sequence.out_final = final
            self._enqueue(sequence)

    def probe(self, sequences: list[Sequence]) -> None:
        with self._lock:
            for sequence in sequences:
                sequence.probe = True
                self._enqueue(sequence)

    def _enqueue(self, sequence: Sequence) -> None:
        # A request being sent for is queued again when that send is done.
        if not sequence.queued and not sequence.sending:
            sequence.queued = True
            self._ready.append(sequence)
            self._lock.notify()

    def close(self, timeout: float) -> None:
        """Deliver what is queued (for up to `timeout`), then stop the threads."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._ready:
                    if self._closing:
                        return
                    self._lock.wait()
                sequence = self._ready.popleft()
                sequence.queued, sequence.sending = False, True
                cut = sequence.first_cut
                if cut is not None and cut != (-1, -1):
                    sequence.first_cut = (-1, -1)  # done: later packs may merge
                    text, ids, final = sequence.out_text[: cut[0]], sequence.out_ids[: cut[1]], None
                    sequence.out_text = sequence.out_text[cut[0] :]
                    sequence.out_ids = sequence.out_ids[cut[1] :]
                else:
                    text, ids, final = sequence.out_text, sequence.out_ids, sequence.out_final
                    sequence.out_text, sequence.out_ids, sequence.out_final = "", [], None
                probe, sequence.probe = sequence.probe, False
            try:
                self._deliver(sequence, text, ids, final, probe)
            finally:
                with self._lock:
                    sequence.sending = False
                    if (
                        sequence.out_text
                        or sequence.out_ids
                        or sequence.out_final
                        or sequence.probe
                    ):
                        self._enqueue(sequence)

    def _deliver(
        self, sequence: Sequence, text: str, ids: list[int], final: Chunk | None, probe: bool
    ) -> None:
        if sequence.closed:
            return
        try:
            if final is not None:
                sequence.closed = True
                if not final.error:
                    final.text, final.token_ids = text + final.text, ids + final.token_ids
                sequence.sink.send(final)
                return
            if text or ids:
                sequence.sink.send(Chunk(text=text, token_ids=ids))
                probe = True
            if probe and sequence.sink.cancelled():
                sequence.gone = True
        except Exception:  # a client that went away must not stop the others
            sequence.gone = True
