"""The data pipeline: rejects with file and line, PII, outliers, duplicates, hash, split."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from trainer.data import pii
from trainer.data.hashing import dataset_sha256, split
from trainer.data.pipeline import DataOptions, EmptyDatasetError, build_dataset, load_dataset
from trainer.data.records import Record
from trainer.data.sources import InputError, resolve_inputs

OPTIONS = DataOptions(min_chars=8, val_fraction=0.2)
WORDS = [f"{w}{n}" for w in ("alpha", "beta", "gamma", "delta", "omega", "sigma") for n in "abc"]


def _doc(seed: int, words: int = 60) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) + str(rng.randrange(1000)) for _ in range(words))


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_bytes(b"\n".join(line.encode("utf-8", "surrogatepass") for line in lines) + b"\n")
    return path


def test_bad_records_are_counted_and_written_with_file_and_line(tmp_path: Path) -> None:
    good = [json.dumps({"text": _doc(i), "lang": "en"}) for i in range(12)]
    path = tmp_path / "in.jsonl"
    _jsonl(
        path, [*good[:3], "{not json", json.dumps({"txt": "x"}), json.dumps({"text": 5}), *good[3:]]
    )
    with path.open("ab") as f:
        f.write(b'{"text": "caf\xe9 broken utf8"}\n')
        f.write(json.dumps({"text": "tiny"}).encode() + b"\n")
    ds = build_dataset(inputs=[path], out_dir=tmp_path / "out", options=OPTIONS)
    assert ds.report.rejected == {
        "invalid_json": 1,
        "invalid_utf8": 1,
        "missing_text": 1,
        "text_not_string": 1,
        "too_short": 1,
    }
    rejects = [
        json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()
    ]
    assert {(r["reason"], r["line"]) for r in rejects} == {
        ("invalid_json", 4),
        ("missing_text", 5),
        ("text_not_string", 6),
        ("invalid_utf8", 16),
        ("too_short", 17),
    }
    assert all(r["source"] == str(path) for r in rejects)
    assert len(ds.train) + len(ds.val) == 12
    kept = [
        json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text().splitlines()
    ]
    assert all(row["meta"] == {"lang": "en"} for row in kept), "metadata travels with the record"


def test_duplicates_and_near_duplicates_are_removed(tmp_path: Path) -> None:
    base = _doc(1, words=200)
    edited = base.replace(base.split()[50], "changed", 1)
    texts = [base, base.replace(" ", "  "), edited, _doc(2, 200), _doc(3, 200)]
    path = _jsonl(tmp_path / "in.jsonl", [json.dumps({"text": t}) for t in texts])
    ds = build_dataset(inputs=[path], out_dir=tmp_path / "out", options=OPTIONS)
    steps = {s.step: (s.records_in, s.records_out) for s in ds.report.steps}
    assert steps["exact_duplicates"] == (5, 4)
    assert steps["near_duplicates"] == (4, 3)
    assert sorted(ds.train + ds.val) == sorted(
        t for t in texts if t in {_doc(2, 200), _doc(3, 200)} or t in ds.train + ds.val
    )
    assert len(ds.train + ds.val) == 3


def test_length_outliers_are_dropped(tmp_path: Path) -> None:
    texts = [_doc(i, 40) for i in range(30)] + ["x" * 60_000]
    path = _jsonl(tmp_path / "in.jsonl", [json.dumps({"text": t}) for t in texts])
    ds = build_dataset(inputs=[path], out_dir=tmp_path / "out", options=OPTIONS)
    assert ds.report.rejected == {"length_outlier": 1}


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("contact jane.doe+ml@example.co.uk today", "email"),
        ("call +1 415-555-0132 now", "phone"),
        ("call (415) 555-0132 now", "phone"),
        ("server at 192.168.10.4:8080", "ip"),
        ("ipv6 2001:db8:85a3::8a2e:370:7334 here", "ip"),
        ('OPENAI_KEY = "sk-abcdefghijklmnopqrstuvwxyz123456"', "secret"),
        ("aws AKIAIOSFODNN7EXAMPLE key", "secret"),
        ('api_key: "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg="', "secret"),
    ],
)
def test_pii_is_scrubbed_and_counted(text: str, kind: str) -> None:
    counts: Counter[str] = Counter()
    scrubbed = pii.scrub(text, counts)
    assert counts == {kind: 1}
    assert f"<{'IP' if kind == 'ip' else kind.upper()}>" in scrubbed


@pytest.mark.parametrize(
    "code",
    [
        "x = 1234567890\nmask = 0x7fffffff",
        "version = '3.11.7'\nsys.version_info >= (3, 8, 0)",
        "when = '2026-11-22 14:02:00'\nratio = a[1:2:3]",
        "token = tokenize.generate_tokens(readline)",
        "def connect(host='localhost', port=8080):\n    return (host, port)",
        "for i in range(100, 200, 300): print(i)",
    ],
)
def test_ordinary_code_is_left_alone(code: str) -> None:
    counts: Counter[str] = Counter()
    assert pii.scrub(code, counts) == code
    assert not counts


def test_hash_ignores_order_and_notices_any_change() -> None:
    records = [Record(text=_doc(i), source="s", line=i) for i in range(20)]
    shuffled = records[:]
    random.Random(5).shuffle(shuffled)
    assert dataset_sha256(records) == dataset_sha256(shuffled)
    changed = records[:]
    changed[7] = Record(text=records[7].text + ".", source="s", line=7)
    assert dataset_sha256(changed) != dataset_sha256(records)
    assert dataset_sha256(records[:-1]) != dataset_sha256(records)


def test_pipeline_hash_and_split_do_not_depend_on_input_order(tmp_path: Path) -> None:
    texts = [_doc(i) for i in range(40)] + [_doc(3)]
    a = _jsonl(tmp_path / "a.jsonl", [json.dumps({"text": t}) for t in texts])
    b = _jsonl(tmp_path / "b.jsonl", [json.dumps({"text": t}) for t in reversed(texts)])
    first = build_dataset(inputs=[a], out_dir=tmp_path / "1", options=OPTIONS)
    second = build_dataset(inputs=[b], out_dir=tmp_path / "2", options=OPTIONS)
    assert first.sha256 == second.sha256
    assert (first.train, first.val) == (second.train, second.val)
    assert 2 <= len(first.val) <= 16
    reloaded = load_dataset(tmp_path / "1")
    assert (reloaded.train, reloaded.val, reloaded.sha256) == (first.train, first.val, first.sha256)


def test_split_keeps_both_sides_non_empty() -> None:
    two = [Record(text=_doc(i), source="s", line=i) for i in range(2)]
    train, val = split(two, val_fraction=0.01)
    assert (len(train), len(val)) == (1, 1)


def test_nothing_left_is_a_clear_error(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "in.jsonl", [json.dumps({"text": "hi"}), "oops"])
    with pytest.raises(EmptyDatasetError, match="step 'validate' removed the last"):
        build_dataset(inputs=[path], out_dir=tmp_path / "out", options=OPTIONS)


def test_inputs_from_text_files_directories_and_globs(tmp_path: Path) -> None:
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    for i in range(3):
        (tmp_path / "src" / "pkg" / f"m{i}.py").write_text(f"def f{i}():\n    return {i}\n" * 5)
    (tmp_path / "notes.txt").write_text(_doc(9))
    assert len(resolve_inputs([tmp_path / "src"]).files) == 3
    assert len(resolve_inputs([str(tmp_path / "src" / "**" / "*.py")]).files) == 3
    assert len(resolve_inputs([tmp_path / "notes.txt", tmp_path / "src"]).files) == 4
    with pytest.raises(InputError, match="not a file, a directory or a glob"):
        resolve_inputs([tmp_path / "missing.jsonl"])


def test_default_dataset_is_the_standard_library_without_tests_or_codecs(tmp_path: Path) -> None:
    inputs = resolve_inputs(None)
    assert inputs.uri.startswith("python-stdlib:")
    names = {p.as_posix() for p in inputs.files}
    assert any(n.endswith("/json/decoder.py") for n in names)
    assert not any("/encodings/" in n or "/test/" in n or "/idlelib/" in n for n in names)
    ds = build_dataset(inputs=None, out_dir=tmp_path, options=DataOptions(max_total_chars=200_000))
    assert 200_000 <= ds.report.chars < 600_000
    assert ds.report.length_quantiles[0] == ds.report.lengths["min"]
    assert len(ds.report.length_quantiles) == 101
