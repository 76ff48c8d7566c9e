"""CLIP's BPE tokenizer: byte order, hand-derived ids on a four-merge vocabulary."""

import pytest

pytest.importorskip("torch")

from mora_agents.eval import _deps
from mora_agents.eval.nets.tokenizer import ClipTokenizer, bytes_to_unicode

from . import tiny_weights

PRINTABLE = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]


def test_byte_map_keeps_printable_bytes_first_in_order():
    mapping = bytes_to_unicode()
    assert len(PRINTABLE) == 188 and sorted(mapping) == list(range(256))
    items = list(mapping.items())
    assert items[:188] == [(b, chr(b)) for b in PRINTABLE]
    # The 68 others follow in byte order, on chr(256) onwards: 0..32, 127..160, then 173 (soft hyphen).
    others = [*range(33), *range(127, 161), 173]
    assert items[188:] == [(b, chr(256 + n)) for n, b in enumerate(others)]
    assert mapping[0] == chr(256) and mapping[ord(" ")] == "Ġ" == chr(288) and mapping[173] == chr(323)
    assert len(set(mapping.values())) == 256


def test_tokenizer_hand_computed(tmp_path):
    tokenizer = ClipTokenizer(tiny_weights.write_bpe(tmp_path))
    # Ids: 0..255 the bytes in bytes_to_unicode order (the 188 printable ones first: '!' 0 ... '~' 93,
    # '¡' 94 ... '¬' 105, '®' 106 ... 'ÿ' 187, then the 68 others), 256..511 the same with '</w>',
    # 512..515 the four merges, 516 start, 517 end.
    sot, eot = 512 + 4, 512 + 5
    assert tokenizer.encoder["a</w>"] == 256 + ord("a") - ord("!") == 320  # as in OpenAI's vocabulary
    # "hello" merges fully into merge #3 (id 515); "hi" has no merge: 'h' is 104 - 33 = 71 and
    # 'i</w>' 256 + 105 - 33 = 328.
    assert tokenizer.encode("  Hello   hi ") == [515, 71, 328]
    # "é" is UTF-8 C3 A9, both printable: 'Ã' (195) is 106 + 195 - 174 = 127 and '©</w>' (169) 256 + 94 + 8.
    assert tokenizer.encode("é") == [127, 358]
    # The soft hyphen is C2 AD: 'Â' (194) is 106 + 20 = 126; byte 173 is the last non-printable one, 188 + 67,
    # so with '</w>' it is the last byte-level id, 511.
    assert tokenizer.encode("\u00ad") == [126, 511]
    assert tokenizer.encode("hi<|endoftext|>") == [71, 328, eot]  # special tokens are never split
    tokens = tokenizer.tokenize(["hello", "hello " * 100], context_length=8)
    assert tokens[0].tolist() == [sot, 515, eot, 0, 0, 0, 0, 0]
    assert tokens[1].tolist() == [sot] + [515] * 6 + [eot]


def test_text_is_fixed_by_ftfy_then_unescaped_like_clip(tmp_path):
    tokenizer = ClipTokenizer(tiny_weights.write_bpe(tmp_path))
    # Mojibake is repaired first: "schÃ¶n" becomes "schön", whose "ö" is C3 B6: 'Ã' 127 and '¶' 106 + 182 - 174.
    # 's' 115 - 33, 'c' 99 - 33, 'h' 71, 'n</w>' 256 + 110 - 33.
    assert tokenizer.encode("schÃ¶n") == tokenizer.encode("schön") == [82, 66, 71, 127, 114, 333]
    # Curly quotes become '"' ('"</w>' is 256 + 34 - 33); the ligature "ﬁ" becomes "fi"; nested HTML entities unescape.
    assert tokenizer.encode("“hi”") == [257, 71, 328, 257]
    assert tokenizer.encode("ﬁ") == tokenizer.encode("fi")
    assert tokenizer.encode("&amp;quot;hi&amp;quot;") == [257, 71, 328, 257]


def test_missing_ftfy_names_the_extra(tmp_path, monkeypatch):
    real = _deps.importlib.import_module
    monkeypatch.setattr(_deps.importlib, "import_module", lambda name: real("no_ftfy" if name == "ftfy" else name))
    with pytest.raises(_deps.MissingDependencyError, match=r"'ftfy' is required.*pip install mora-agents\[eval\]"):
        ClipTokenizer(tiny_weights.write_bpe(tmp_path))
