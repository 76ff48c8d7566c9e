"""A small CLIP tokenizer built in memory, for the `tiny` preset (no files, no network)."""

from __future__ import annotations

from functools import lru_cache

from transformers import CLIPTokenizer, T5Tokenizer

TINY_MAX_LENGTH = 77


@lru_cache(maxsize=1)
def tiny_clip_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP tokenizer: every printable byte is a token, with and without `</w>`, and no merges.

    Real CLIP text has the same structure (BOS, byte-pair tokens, EOS, padding to 77), so the pipelines
    run their usual code; only the vocabulary is small (about 200 ids).
    """
    chars = [chr(c) for c in range(33, 127)]
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    vocab = {token: i for i, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=TINY_MAX_LENGTH)


@lru_cache(maxsize=1)
def tiny_t5_tokenizer() -> T5Tokenizer:
    """A character-level T5 (SentencePiece unigram) tokenizer, for the T5 and UMT5 text encoders of the `tiny` preset.

    Every printable character is a piece (with and without the word-start mark), so T5 text has its usual structure
    (pieces, `</s>`, padding) over a small vocabulary (about 200 ids) and the pipelines run their usual code.
    """
    chars = [chr(c) for c in range(33, 127)]
    pieces = ["<pad>", "</s>", "<unk>", "\u2581", *chars, *("\u2581" + c for c in chars)]
    return T5Tokenizer(vocab=[(piece, -1.0) for piece in pieces], extra_ids=0)
