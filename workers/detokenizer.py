"""Incremental detokenization: text deltas that never split a UTF-8 character.

Decoding the whole sequence after every token costs O(length) per token. Instead only a short
window is decoded: the tokens since the last emitted boundary (`prefix`) and the new ones
(`read`). While the window ends inside a multi-byte character the byte-level decoder yields
U+FFFD, and the delta waits for the next token. The cost per token is constant.
"""

from __future__ import annotations

from typing import Protocol

REPLACEMENT = "\ufffd"


class Decoder(Protocol):
    def decode(self, ids: list[int], /, *, skip_special_tokens: bool = True) -> str: ...


class IncrementalDetokenizer:
    def __init__(self, decoder: Decoder, prompt_ids: list[int], window: int = 4) -> None:
        self._decoder = decoder
        # Start with a little prompt context so the first tokens decode with their spacing.
        self._ids = list(prompt_ids[-window:])
        self._prefix = 0
        self._read = len(self._ids)
        self._before = decoder.decode(self._ids) if self._ids else ""  # text of ids[prefix:read]

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes (possibly empty)."""
        self._ids.append(token_id)
        before = self._before
        after = self._decoder.decode(self._ids[self._prefix :])
        if after.endswith(REPLACEMENT) or len(after) <= len(before):
            return ""
        delta = after[len(before) :]
        # The next window starts where this one was read up to; its text is this delta.
        self._prefix, self._read, self._before = self._read, len(self._ids), delta
        # Only the window is ever decoded again; drop what lies before it.
        if self._prefix > 64:
            del self._ids[: self._prefix]
            self._read -= self._prefix
            self._prefix = 0
        return delta
