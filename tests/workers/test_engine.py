"""The continuous-batching engine, driven without a server through fakes at its seams."""

from __future__ import annotations

import itertools
import random
import threading
import time
from typing import Any, cast

import pytest

from tests.workers.fakes import CharTokenizer, FakeDecoder, ListSink
from workers.engine import Engine, EngineConfig
from workers.requests import Chunk, EngineStopped, GenerationRequest, Overloaded
from workers.sampling import InvalidRequest, SamplingParams


def _engine(decoder: FakeDecoder, **config: Any) -> Engine:
    engine = Engine(decoder=decoder, tokenizer=CharTokenizer(), config=EngineConfig(**config))
    engine.start()
    return engine


def _chunks(sink: ListSink) -> list[Chunk]:
    assert sink.done.wait(10), "no final response"
    return cast(list[Chunk], sink.chunks)


def _run(engine: Engine, prompt: str, **params: Any) -> tuple[str, Chunk]:
    sink = ListSink()
    engine.submit(
        GenerationRequest(prompt=prompt, params=SamplingParams(temperature=0.0, **params)), sink
    )
    chunks = _chunks(sink)
    return "".join(c.text for c in chunks), chunks[-1]


def test_streams_the_first_token_at_once_then_packs_of_several_then_a_final_one() -> None:
    # Decoding is slower than delivering here, so every pack leaves on its own.
    engine = _engine(
        FakeDecoder(step_delay_s=0.01), tokens_per_response=4, response_interval_s=10.0
    )
    sink = ListSink()
    engine.submit(
        GenerationRequest(prompt="hello", params=SamplingParams(max_tokens=10, temperature=0)), sink
    )
    chunks = _chunks(sink)
    engine.stop()
    final = chunks[-1]
    assert (final.final, final.finish_reason, final.prompt_tokens, final.completion_tokens) == (
        True,
        "length",
        5,
        10,
    )
    assert [len(c.token_ids) for c in chunks] == [1, 4, 4, 1]
    assert set(final.timings) == {"queue_ms", "first_token_ms", "total_ms"}


def test_responses_merge_when_the_client_is_slower_than_decoding() -> None:
    engine = _engine(FakeDecoder(), tokens_per_response=2)
    alone, _ = _run(engine, "hello", max_tokens=40)
    slow = ListSink(send_delay_s=0.02)
    engine.submit(
        GenerationRequest(prompt="hello", params=SamplingParams(max_tokens=40, temperature=0)),
        slow,
    )
    chunks = _chunks(slow)
    engine.stop()
    assert "".join(c.text for c in chunks) == alone, "nothing lost or reordered"
    assert sum(len(c.token_ids) for c in chunks) == 40
    assert len(chunks) < 40 // 2, "packs merged instead of queueing one response each"
    assert max(len(c.token_ids) for c in chunks) > 2


class _Watched(ListSink):
    """A slow sink that notes sends overlapping across requests, or within its own request."""

    active = 0
    across = False

    def __init__(self) -> None:
        super().__init__(send_delay_s=0.003)
        self.mine = 0
        self.within = False

    def send(self, chunk: object) -> None:
        type(self).active += 1  # += and -= each run under the GIL
        self.mine += 1
        type(self).across |= type(self).active > 1
        self.within |= self.mine > 1
        try:
            super().send(chunk)
        finally:
            self.mine -= 1
            type(self).active -= 1


def test_several_senders_overlap_across_requests_and_keep_each_in_order() -> None:
    prompts = [f"{c * 3} go" for c in "abcdefgh"]
    alone_engine = _engine(FakeDecoder())
    alone = [_run(alone_engine, p, max_tokens=30)[0] for p in prompts]
    alone_engine.stop()
    engine = _engine(FakeDecoder(step_delay_s=0.001), tokens_per_response=1, senders=3)
    sinks = [_Watched() for _ in prompts]
    for prompt, sink in zip(prompts, sinks, strict=True):
        engine.submit(
            GenerationRequest(prompt=prompt, params=SamplingParams(max_tokens=30, temperature=0)),
            sink,
        )
    chunks = [_chunks(s) for s in sinks]
    engine.stop()
    assert ["".join(c.text for c in each) for each in chunks] == alone, "in order, none lost"
    assert all([c.final for c in each] == [False] * (len(each) - 1) + [True] for each in chunks)
    assert _Watched.across, "responses to different requests were sent at the same time"
    assert not any(s.within for s in sinks), "never two sends at once for one request"


@pytest.mark.parametrize("lanes", [1, 2, 3])
def test_requests_joining_a_running_batch_get_what_they_would_get_alone(lanes: int) -> None:
    prompts = [
        "".join(random.Random(i).choices("abcdefgh ", k=random.Random(i).randint(1, 20)))
        for i in range(24)
    ]
    alone_engine = _engine(FakeDecoder())
    alone = [_run(alone_engine, p, max_tokens=12 + i % 9)[0] for i, p in enumerate(prompts)]
    alone_engine.stop()

    decoder = FakeDecoder(step_delay_s=0.001)
    engine = _engine(decoder, max_active=8, lanes=lanes)
    sinks = []
    for i, prompt in enumerate(prompts):
        sink = ListSink()
        params = SamplingParams(temperature=0.0, max_tokens=12 + i % 9)
        engine.submit(GenerationRequest(prompt=prompt, params=params), sink)
        sinks.append(sink)
        time.sleep(random.Random(i).random() * 0.004)
    together = ["".join(c.text for c in _chunks(s)) for s in sinks]
    engine.stop()
    assert together == alone
    assert max(decoder.batch_sizes) > 1, "requests really shared decode steps"
    assert max(decoder.batch_sizes) <= -(-8 // lanes), "never more than max_active rows"
    if lanes > 1:
        assert len(decoder.threads) == lanes, "each lane stepped on a thread of its own"
        assert decoder.overlapped, "the lanes' steps ran at the same time"


def test_lanes_share_the_slots_and_stay_balanced() -> None:
    gate = threading.Event()
    decoder = FakeDecoder(gate=gate)
    engine = _engine(decoder, max_active=5, lanes=2)
    sinks = [ListSink() for _ in range(7)]
    with engine._lock:  # all seven wait together: five take the slots, two wait
        for sink in sinks:
            engine.submit(
                GenerationRequest(prompt="abc", params=SamplingParams(max_tokens=6, temperature=0)),
                sink,
            )
    # Each lane admits its share and waits at the gate in its prefill.
    deadline = time.monotonic() + 10
    while len(engine._starting) < 5 and time.monotonic() < deadline:
        time.sleep(0.001)
    gate.set()
    assert all(_chunks(s)[-1].finish_reason == "length" for s in sinks)
    engine.stop()
    # Each lane's first step is its prefill (the lanes step independently, in any order).
    firsts = sorted(sizes[0] for sizes in decoder.sizes_by_thread.values())
    assert firsts == [2, 3], f"five newcomers split 3 + 2 over the lanes: {decoder.sizes_by_thread}"
    assert max(decoder.batch_sizes) <= 3


def test_full_slots_and_queue_answer_overloaded() -> None:
    gate = threading.Event()
    engine = _engine(FakeDecoder(gate=gate), max_active=1, max_queue=2)
    request = GenerationRequest(prompt="a", params=SamplingParams(max_tokens=5, temperature=0))
    sinks = [ListSink() for _ in range(3)]
    for sink in sinks:
        engine.submit(request, sink)
        time.sleep(0.05)
    with pytest.raises(Overloaded, match="retry later"):
        engine.submit(request, ListSink())
    gate.set()
    assert all(_chunks(s)[-1].finish_reason == "length" for s in sinks)
    engine.stop()


def test_without_a_queue_only_free_slots_take_requests() -> None:
    gate = threading.Event()
    engine = _engine(FakeDecoder(gate=gate), max_active=2, max_queue=0)
    request = GenerationRequest(prompt="a", params=SamplingParams(max_tokens=3, temperature=0))
    sinks = [ListSink(), ListSink()]
    for sink in sinks:
        engine.submit(request, sink)
    with pytest.raises(Overloaded):
        engine.submit(request, ListSink())
    gate.set()
    assert all(_chunks(s)[-1].finish_reason == "length" for s in sinks)
    engine.submit(request, late := ListSink())
    assert _chunks(late)[-1].finish_reason == "length"
    engine.stop()


def _streams(engine: Engine, count: int, max_tokens: int) -> list[ListSink]:
    sinks = [ListSink() for _ in range(count)]
    for i, sink in enumerate(sinks):
        params = SamplingParams(max_tokens=max_tokens, temperature=0)
        engine.submit(GenerationRequest(prompt=f"s{i}", params=params), sink)
    for sink in sinks:
        _chunks(sink)
    return sinks


def _posted(engine: Engine) -> dict[str, list[float]]:
    """When the engine decided to send each request's responses (by prompt), final ones
    left out: the engine's own times, not the sink's, which a busy machine would blur."""
    at: dict[str, list[float]] = {}
    post = engine._post

    def noting(sequence: Any, text: str, ids: list[int], final: Chunk | None = None) -> None:
        if final is None:
            at.setdefault(sequence.request.prompt, []).append(engine.clock())
        post(sequence, text, ids, final)

    engine._post = noting  # type: ignore[method-assign]
    return at


def test_a_response_budget_spaces_each_streams_responses_by_its_share() -> None:
    # 4 streams sharing 40 responses/s: each may send every 100 ms, though it has a token to
    # send every 5 ms step and would otherwise send each one (1 token per response).
    config: dict[str, Any] = {"tokens_per_response": 1, "response_interval_s": 0.0}
    free = _engine(FakeDecoder(step_delay_s=0.005), **config)
    unbudgeted = _streams(free, 4, 60)
    free.stop()
    engine = _engine(FakeDecoder(step_delay_s=0.005), responses_per_s=40, **config)
    posted = _posted(engine)
    budgeted = _streams(engine, 4, 60)
    engine.stop()
    for i, (fast, sink) in enumerate(zip(unbudgeted, budgeted, strict=True)):
        chunks = cast(list[Chunk], sink.chunks)
        assert "".join(c.text for c in chunks) == "".join(c.text for c in _chunks(fast))
        assert sum(len(c.token_ids) for c in chunks) == 60
        assert len(chunks[0].token_ids) == 1, "the first token still leaves at once"
        assert len(fast.chunks) > 50
        # The first token, then packs 100 ms apart (75 ms once one of the four has ended).
        times = posted[f"s{i}"]
        assert len(times) >= 2, "several tokens per pack, but still a stream"
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 0.075, gaps


def test_requests_answered_in_one_response_take_no_share_of_the_budget() -> None:
    config: dict[str, Any] = {"tokens_per_response": 1, "response_interval_s": 0.0}
    engine = _engine(FakeDecoder(step_delay_s=0.005), responses_per_s=40, **config)
    plain = [ListSink() for _ in range(3)]
    for i, sink in enumerate(plain):
        params = SamplingParams(max_tokens=60, temperature=0)
        engine.submit(GenerationRequest(prompt=f"p{i}", params=params, stream=False), sink)
    (stream,) = _streams(engine, 1, 50)
    for sink in plain:
        assert len(_chunks(sink)) == 1
    engine.stop()
    # Alone among streams it may send every 25 ms (50 steps of 5 ms or more: 10 or so
    # responses); counting the plain requests it would be every 100 ms (about 4).
    assert len(stream.chunks) >= 8


def test_without_a_stream_to_share_with_a_stream_gets_the_whole_budget() -> None:
    config: dict[str, Any] = {"tokens_per_response": 1, "response_interval_s": 0.0}
    engine = _engine(FakeDecoder(step_delay_s=0.005), responses_per_s=40, **config)
    (alone,) = _streams(engine, 1, 60)
    shared = _streams(engine, 4, 60)
    engine.stop()
    # Alone it may send every 25 ms, beside three others every 100 ms.
    assert len(alone.chunks) > max(len(s.chunks) for s in shared) + 3


def test_a_cancelled_request_frees_its_slot_within_a_few_steps() -> None:
    # A decode step of a real model takes milliseconds; asking the client is quicker.
    decoder = FakeDecoder(context_length=400, step_delay_s=0.005)
    engine = _engine(decoder, tokens_per_response=1)
    sink = ListSink(cancel_after_chunks=2)
    engine.submit(
        GenerationRequest(prompt="go", params=SamplingParams(max_tokens=300, temperature=0)), sink
    )
    chunks = _chunks(sink)
    assert chunks[-1].finish_reason == "cancelled"
    assert chunks[-1].completion_tokens <= 4
    assert engine.load == (0, 0)
    engine.stop()


def test_a_client_that_went_away_does_not_stop_the_others() -> None:
    engine = _engine(FakeDecoder(), tokens_per_response=1)
    params = SamplingParams(max_tokens=8, temperature=0)
    engine.submit(GenerationRequest(prompt="x", params=params), ListSink(fail_on_send=True))
    good = ListSink()
    engine.submit(GenerationRequest(prompt="y", params=params), good)
    assert _chunks(good)[-1].finish_reason == "length"
    assert engine.healthy
    engine.stop()


def test_stop_sequences_and_end_of_text() -> None:
    engine = _engine(FakeDecoder())
    text, final = _run(engine, "abc", max_tokens=30)
    stop = text[5:7]
    cut, final = _run(engine, "abc", max_tokens=30, stop=(stop,))
    assert (cut, final.finish_reason) == (text[: text.index(stop)], "stop")
    engine.stop()
    eos_engine = _engine(FakeDecoder(eos_after=6))
    text, final = _run(eos_engine, "abc", max_tokens=30)
    assert (final.finish_reason, final.completion_tokens, len(text)) == ("eos", 3, 3)
    eos_engine.stop()


def test_non_streaming_callers_get_one_response() -> None:
    engine = _engine(FakeDecoder(), tokens_per_response=1)
    sink = ListSink()
    params = SamplingParams(max_tokens=9, temperature=0)
    engine.submit(GenerationRequest(prompt="abc", params=params, stream=False), sink)
    chunks = _chunks(sink)
    engine.stop()
    assert len(chunks) == 1
    assert (len(chunks[0].token_ids), len(chunks[0].text), chunks[0].final) == (9, 9, True)


def test_prompts_longer_than_the_context_are_refused_or_truncated() -> None:
    engine = _engine(FakeDecoder(context_length=16))
    with pytest.raises(InvalidRequest, match="context is 16"):
        engine.submit(
            GenerationRequest(prompt="a" * 20, params=SamplingParams(max_tokens=4)), ListSink()
        )
    sink = ListSink()
    params = SamplingParams(max_tokens=4, temperature=0)
    engine.submit(GenerationRequest(prompt="b" * 20, params=params, truncate=True), sink)
    final = _chunks(sink)[-1]
    assert (final.prompt_tokens, final.completion_tokens) == (12, 4)
    with pytest.raises(InvalidRequest, match="max_tokens"):
        engine.submit(
            GenerationRequest(prompt="a", params=SamplingParams(max_tokens=16)), ListSink()
        )
    engine.stop()


@pytest.mark.parametrize("lanes", [1, 2])
def test_when_the_loop_dies_every_open_request_gets_an_error(lanes: int) -> None:
    gate = threading.Event()  # every request is in before the first step fails
    engine = _engine(FakeDecoder(fail_after_steps=3, gate=gate), max_active=2, lanes=lanes)
    sinks = [ListSink() for _ in range(4)]
    for sink in sinks:
        engine.submit(
            GenerationRequest(prompt="abc", params=SamplingParams(max_tokens=20, temperature=0)),
            sink,
        )
    gate.set()
    finals = [_chunks(s)[-1] for s in sinks]
    assert all("decoder exploded" in f.error for f in finals)
    assert not engine.healthy
    with pytest.raises(EngineStopped, match="decoder exploded"):
        engine.submit(GenerationRequest(prompt="a"), ListSink())
    engine.stop()


def test_requests_being_prefilled_when_the_loop_dies_get_their_error_too() -> None:
    failures: list[str] = []
    engine = Engine(
        decoder=FakeDecoder(fail_after_steps=1),
        tokenizer=CharTokenizer(),
        on_failure=failures.append,
    )
    engine.start()
    _, final = _run(engine, "abc", max_tokens=1)  # step 1: its prefill, and it is done
    assert final.finish_reason == "length"
    joining = [ListSink() for _ in range(3)]
    with engine._lock:  # all three wait together, so one prefill (step 2, which fails) has them
        for sink in joining:
            engine.submit(
                GenerationRequest(prompt="xyz", params=SamplingParams(max_tokens=5, temperature=0)),
                sink,
            )
    assert all("decoder exploded" in _chunks(s)[-1].error for s in joining)
    assert len(failures) == 1
    assert "decoder exploded" in failures[0]
    engine.stop()


def test_an_engine_needs_a_lane() -> None:
    with pytest.raises(ValueError, match="lanes must be at least 1"):
        Engine(decoder=FakeDecoder(), tokenizer=CharTokenizer(), config=EngineConfig(lanes=0))


class _GoneSink(ListSink):
    """A client that went away while its request waited for a slot."""

    def cancelled(self) -> bool:
        return True


def test_a_request_cancelled_while_waiting_never_starts_and_frees_its_place() -> None:
    # The first request's 20 steps take 100 ms; the waiting one is asked about every step.
    decoder = FakeDecoder(step_delay_s=0.005)
    engine = _engine(decoder, max_active=1, max_queue=1, tokens_per_response=1)
    first = ListSink()
    engine.submit(
        GenerationRequest(prompt="abc", params=SamplingParams(max_tokens=20, temperature=0)), first
    )
    gone = _GoneSink()
    engine.submit(
        GenerationRequest(prompt="xyz", params=SamplingParams(max_tokens=8, temperature=0)), gone
    )
    assert _chunks(first)[-1].finish_reason == "length"
    final = _chunks(gone)[-1]
    assert (final.finish_reason, final.completion_tokens) == ("cancelled", 0)
    deadline = time.monotonic() + 2
    while engine._starting and time.monotonic() < deadline:
        time.sleep(0.005)
    assert engine._starting == [], "the idle lane holds nothing as starting"
    # Its place is free again: one running and one waiting fit, as before.
    later = [ListSink(), ListSink()]
    for sink in later:
        engine.submit(
            GenerationRequest(prompt="a", params=SamplingParams(max_tokens=2, temperature=0)), sink
        )
    assert all(_chunks(s)[-1].finish_reason == "length" for s in later)
    engine.stop()
