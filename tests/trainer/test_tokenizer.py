"""The byte-level BPE tokenizer round-trips any text and marks document ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.tokenizer import EOT_ID, encode_corpus, load_tokenizer, save_tokenizer, train_tokenizer

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "class Foo:\n    pass\n",
    "print('hello, world')\n",
] * 30


@pytest.mark.parametrize(
    "text",
    [
        "emoji 🚀🔥 and ZWJ 👩‍👩‍👧",
        "CJK 東京タワー 한국어",
        "combining e\u0301 a\u0308",
        "\ttabs\t and trailing   ",
        "",
    ],
)
def test_round_trips_arbitrary_unicode(tmp_path: Path, text: str) -> None:
    tok = load_tokenizer(
        save_tokenizer(train_tokenizer(texts=CORPUS, vocab_size=300), tmp_path / "t.json")
    )
    assert tok.decode(tok.encode(text).ids) == text


def test_eot_is_token_zero_and_separates_documents() -> None:
    tok = train_tokenizer(texts=CORPUS, vocab_size=300)
    assert tok.token_to_id("<|endoftext|>") == EOT_ID
    assert tok.get_vocab_size() <= 300
    ids = encode_corpus(tokenizer=tok, texts=["a = 1", "b = 2"])
    assert ids.dtype.name == "int32"
    assert list(ids).count(EOT_ID) == 2
    assert ids[-1] == EOT_ID
    assert tok.decode(list(map(int, ids)), skip_special_tokens=True) == "a = 1b = 2"
