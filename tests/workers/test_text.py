"""Sampling, incremental detokenization and stop sequences, without a server."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from workers.detokenizer import IncrementalDetokenizer
from workers.sampling import InvalidRequest, SamplingParams, choose, make_rng
from workers.stops import StopMatcher

TEXTS = [
    "def main():\n    print('héllo wörld')  # 注释 🚀\n",
    "naïve café — 東京 ✓ tabs\tand  spaces  \n",
    "for i in range(10):\n\tyield i * 2\n",
] * 20


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TEXTS, trainer)
    return tok


@pytest.mark.parametrize(
    "text",
    [
        "héllo wörld 🚀 東京",
        "   leading and trailing   ",
        "e\u0301 combining",
        "\t\ttabs\n\nnewlines",
        "👩‍👩‍👧 zwj",
    ],
)
def test_deltas_join_to_the_text_and_never_split_characters(
    tokenizer: Tokenizer, text: str
) -> None:
    ids = tokenizer.encode(text).ids
    prompt = tokenizer.encode("x = ").ids
    detok = IncrementalDetokenizer(tokenizer, prompt)
    deltas = [detok.push(i) for i in ids]
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)


def test_detokenizer_work_per_token_does_not_grow(tokenizer: Tokenizer) -> None:
    calls: list[int] = []

    class Counting:
        def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
            calls.append(len(ids))
            return tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    ids = tokenizer.encode("".join(TEXTS)).ids
    detok = IncrementalDetokenizer(Counting(), [])
    text = "".join(detok.push(i) for i in ids)
    assert text == "".join(TEXTS)
    assert max(calls) < 80, "each step decodes a bounded window, not the whole text"


def test_stop_sequences_cut_and_never_leak_a_partial_match() -> None:
    matcher = StopMatcher(("\n\n", "END"))
    out: list[str] = []
    stopped = False
    for piece in ["hello E", "N", "d wor", "ld\n", "\nignored"]:
        text, stopped = matcher.feed(piece)
        out.append(text)
        if stopped:
            break
    assert stopped
    assert out == ["hello ", "", "ENd wor", "ld", ""]
    assert "".join(out) == "hello ENd world"


def test_held_text_is_released_when_generation_ends_otherwise() -> None:
    matcher = StopMatcher(("STOP",))
    assert matcher.feed("abc ST") == ("abc ", False)
    assert matcher.flush() == "ST"


def test_greedy_picks_the_argmax_and_seeded_sampling_repeats() -> None:
    logits = np.array([0.1, 3.0, 2.9, -1.0], dtype=np.float32)
    assert choose(logits, SamplingParams(temperature=0.0), make_rng(None)) == 1
    params = SamplingParams(temperature=1.0, seed=7)
    first = [choose(logits, params, rng) for rng in [make_rng(7)] for _ in range(50)]
    second = [choose(logits, params, rng) for rng in [make_rng(7)] for _ in range(50)]
    assert first == second
    assert set(first) >= {1, 2}


def test_top_k_and_top_p_restrict_the_candidates() -> None:
    logits = np.array([5.0, 4.9, 0.0, 0.0, 0.0], dtype=np.float32)
    rng = make_rng(1)
    assert {choose(logits, SamplingParams(temperature=1.0, top_k=2), rng) for _ in range(300)} == {
        0,
        1,
    }
    assert {
        choose(logits, SamplingParams(temperature=5.0, top_p=0.3), rng) for _ in range(300)
    } == {0}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        (SamplingParams(max_tokens=0), "max_tokens"),
        (SamplingParams(max_tokens=10_000), "max_tokens"),
        (SamplingParams(temperature=-1), "temperature"),
        (SamplingParams(top_p=0), "top_p"),
        (SamplingParams(top_k=-2), "top_k"),
        (SamplingParams(seed=-1), "seed"),
        (SamplingParams(stop=("",)), "stop"),
        (SamplingParams(stop=tuple("abcdefghij")), "stop"),
    ],
)
def test_parameters_are_bounded(params: SamplingParams, field: str) -> None:
    with pytest.raises(InvalidRequest, match=field):
        params.validate(max_new_tokens=256)
