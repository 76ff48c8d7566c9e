"""CLIP's byte-level BPE tokenizer, reading ``bpe_simple_vocab_16e6.txt.gz``."""

from __future__ import annotations

import gzip
import html
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import regex
import torch

from mora_agents.eval._deps import require

SOT, EOT = "<|startoftext|>", "<|endoftext|>"
MAX_MERGES = 49152 - 256 - 2
_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters, in CLIP's order.

    The 188 printable bytes come first, mapped to themselves in byte order; the other 68 follow,
    mapped to ``chr(256)``, ``chr(257)``, ... The order matters: it is the order of the first 256
    (and, with ``</w>``, the next 256) token ids.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in mapping]
    mapping.update({b: chr(256 + n) for n, b in enumerate(others)})
    return mapping


class ClipTokenizer:
    """OpenAI CLIP's ``SimpleTokenizer`` (ids as in ``clip.tokenize``), on a merges file at ``bpe_path``."""

    def __init__(self, bpe_path: Path) -> None:
        with gzip.open(bpe_path, "rt", encoding="utf-8") as handle:
            lines = handle.read().split("\n")[1 : MAX_MERGES + 1]
        merges = [tuple(line.split()) for line in lines if line.strip()]
        self.byte_encoder = bytes_to_unicode()
        base = list(self.byte_encoder.values())
        vocab = base + [v + "</w>" for v in base] + ["".join(m) for m in merges] + [SOT, EOT]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.ranks = {merge: i for i, merge in enumerate(merges)}
        self.fix_text = require("ftfy").fix_text
        self._bpe = lru_cache(maxsize=10_000)(self._bpe_uncached)

    def _bpe_uncached(self, token: str) -> tuple[str, ...]:
        if token in (SOT, EOT):
            return (token,)
        word = (*token[:-1], token[-1] + "</w>")
        while len(word) > 1:
            pairs = set(pairwise(word))
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        return word

    def encode(self, text: str) -> list[int]:
        """CLIP's ``SimpleTokenizer.encode``: ``ftfy.fix_text``, HTML unescaped twice, whitespace and case folded."""
        text = html.unescape(html.unescape(self.fix_text(text))).strip()
        text = _WHITESPACE.sub(" ", text).strip().lower()
        ids: list[int] = []
        for token in _PATTERN.findall(text):
            encoded = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self._bpe(encoded))
        return ids

    def tokenize(self, texts: list[str], context_length: int = 77) -> torch.Tensor:
        """(N, context_length) token ids; over-long texts are truncated, keeping the end token."""
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.encoder[SOT], *self.encode(text), self.encoder[EOT]]
            if len(ids) > context_length:
                ids = ids[: context_length - 1] + [self.encoder[EOT]]
            out[row, : len(ids)] = torch.tensor(ids)
        return out
