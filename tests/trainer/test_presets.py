"""Presets are data: TOML files parsed into typed settings, with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.presets import PresetError, available, load_preset


def test_shipped_presets_load() -> None:
    assert {"tiny", "small"} <= set(available())
    tiny, small = load_preset("tiny"), load_preset("small")
    assert tiny.model_config(4096).n_layer < small.model_config(8192).n_layer
    assert tiny.training.max_minutes == 2.0
    assert tiny.to_dict()["tokenizer"] == {"vocab_size": 4096}
    assert tiny.with_training(max_steps=5, max_minutes=None).training.max_steps == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[model]\n", "invalid"),
        (
            "[tokenizer]\nvocab_size = 10\n[model]\nwidth = 3\n[training]\n",
            "unknown \\[model\\] keys",
        ),
        ('[tokenizer]\nvocab_size = 1\n[model]\n[training]\nprecision = "fp8"\n', "precision"),
        ("not = [toml", "invalid"),
        (
            "[data]\nnear_duplicate_threshold = 0.99\nminhash_permutations = 64\n"
            "[tokenizer]\nvocab_size = 300\n[model]\n[training]\n",
            "cannot be used with 64 MinHash permutations",
        ),
    ],
)
def test_bad_presets_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(PresetError, match=message):
        load_preset(str(path))
    with pytest.raises(PresetError, match="no preset 'nope'"):
        load_preset("nope")
