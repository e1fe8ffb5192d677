"""A self-contained text tokenizer: lower-cased words hashed into a fixed vocabulary.

No vocabulary file to train, ship or download: a word's id is a stable hash (CRC-32) of the
word, so the same caption gives the same ids in every process and on every machine. Collisions
are rare at the vocabulary sizes the configs use (a few hundred distinct words in a templated
corpus against 8-16k buckets) and harmless for a contrastive text tower.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import torch

PAD, BOS, EOS = 0, 1, 2
N_SPECIAL = 3
_WORD = re.compile(r"[^\W_]+|[^\w\s]", re.UNICODE)


@dataclass(frozen=True)
class HashedWordTokenizer:
    """``tokenizer(texts)`` -> ``{"input_ids": (B, L) long, "attention_mask": (B, L) long}``.

    Sequences are ``BOS word ... EOS`` padded with ``PAD`` to the longest one in the batch and
    cut at ``context_length`` (the EOS is kept when a caption is cut).
    """

    vocab_size: int
    context_length: int

    def __post_init__(self) -> None:
        if self.vocab_size <= N_SPECIAL:
            raise ValueError(f"vocab_size must be larger than {N_SPECIAL}")
        if self.context_length < 3:
            raise ValueError("context_length must be at least 3 (BOS, one word, EOS)")

    def words(self, text: str) -> list[str]:
        return _WORD.findall(text.lower())

    def word_id(self, word: str) -> int:
        return N_SPECIAL + zlib.crc32(word.encode("utf-8")) % (self.vocab_size - N_SPECIAL)

    def encode(self, text: str) -> list[int]:
        ids = [self.word_id(w) for w in self.words(text)][: self.context_length - 2]
        return [BOS, *ids, EOS]

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if isinstance(texts, str):
            raise TypeError("tokenizer takes a list of strings, not one string")
        encoded = [self.encode(t) for t in texts]
        length = max((len(e) for e in encoded), default=2)
        ids = torch.full((len(encoded), length), PAD, dtype=torch.long)
        mask = torch.zeros((len(encoded), length), dtype=torch.long)
        for i, e in enumerate(encoded):
            ids[i, : len(e)] = torch.tensor(e, dtype=torch.long)
            mask[i, : len(e)] = 1
        return {"input_ids": ids, "attention_mask": mask}
