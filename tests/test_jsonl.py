"""JSON Lines and the text files a person gives: every Unicode line separator survives a round trip through every
JSONL writer and reader of the project (the dataset's metadata, transcripts, batch requests, seed prompts, a batch's
summary), and files that are no regular files, or too large, are refused at once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import make_image, make_video

from mora_agents.batch import read_requests
from mora_agents.batch.engine import write_summary
from mora_agents.batch.jobs import BatchResult
from mora_agents.batch.requests import BatchRequest
from mora_agents.data import read_seeds
from mora_agents.errors import InputError
from mora_agents.eval.prompts import load_prompts
from mora_agents.eval.video import BadInputError
from mora_agents.jsonl import MAX_DEPTH, dumps, loads_line, read_bounded, read_json_object, read_lines, text_lines
from mora_agents.runs.transcript import TranscriptWriter, scan_transcript
from mora_agents.train import read_dataset, write_sample

SEPARATORS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\r"
"""Every character `str.splitlines()` ends a line at, but `\\n` (and `\\r\\n`)."""
TRICKY = f"a fox{SEPARATORS}in the snow, naïve café 雪"


def physical_lines(path: Path) -> list[str]:
    """A file's lines as any reader splits them, `str.splitlines()` included: none may break a record."""
    return path.read_text(encoding="utf-8").splitlines()


def test_every_separator_survives_dumps_and_text_lines():
    line = dumps({"reason": TRICKY, "n": 1})
    assert "\n" not in line and line.splitlines() == [line]
    assert "雪" in line and "\\u2028" in line and "\\u0085" in line  # UTF-8 kept, separators escaped
    data = (line + "\n" + line + "\r\n").encode()
    assert [json.loads(text)["reason"] for text in text_lines(data, "x")] == [TRICKY, TRICKY]
    # a file written by another tool, separators raw inside its strings: still one record a line
    raw = json.dumps({"text": TRICKY}, ensure_ascii=False).encode() + b"\n"
    assert [json.loads(text)["text"] for text in text_lines(raw, "x")] == [TRICKY]


def test_text_lines_drops_a_byte_order_mark_and_names_a_line_that_is_not_utf8():
    assert text_lines(b"\xef\xbb\xbf{}\nsecond", "f") == ["{}", "second"]
    with pytest.raises(InputError, match=r"^f:2: not UTF-8 text \(byte 0xff at column 3\)$"):
        text_lines(b"ok\nab\xffc\n", "f")


def test_loads_line_bounds_nesting():
    assert loads_line("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    for depth in (MAX_DEPTH + 1, 100_000):  # the deepest would exhaust the recursion of json.loads itself
        with pytest.raises(ValueError, match=f"nested deeper than {MAX_DEPTH} levels"):
            loads_line('{"set": {"a.b": ' + "[" * depth + "]" * depth + "}}")


@pytest.mark.parametrize("make", [
    lambda d: (os.mkfifo(d / "pipe"), d / "pipe")[1],
    lambda d: Path("/dev/zero"),
    lambda d: (d / "folder").mkdir() or d / "folder",
])
def test_read_bounded_refuses_pipes_devices_and_folders_at_once(tmp_path: Path, make):
    path = make(tmp_path)
    with pytest.raises(InputError, match="not a regular file"):
        read_bounded(path, 1024)


def test_read_bounded_refuses_a_larger_file_and_names_a_missing_one(tmp_path: Path):
    (tmp_path / "big.txt").write_bytes(b"x" * 2049)
    with pytest.raises(InputError, match="big.txt: larger than 2 KiB"):
        read_lines(tmp_path / "big.txt", 2048)
    with pytest.raises(InputError, match="missing.txt: no such file"):
        read_bounded(tmp_path / "missing.txt", 2048)


def test_read_json_object_names_a_damaged_file(tmp_path: Path):
    path = tmp_path / "make.json"
    path.write_text('{"seed": 1, "iter')
    with pytest.raises(InputError, match=r"make.json: damaged \(not valid JSON"):
        read_json_object(path)
    path.write_text('{"seed": 1}')
    with pytest.raises(InputError, match=r"make.json: damaged \(no 'iteration'\)"):
        read_json_object(path, ("seed", "iteration"))


def test_a_dataset_keeps_samples_whose_reason_holds_line_separators(tmp_path: Path):
    """The bug: the second sample's write rewrote sample 1 as two invalid lines, and read_dataset failed."""
    clip, frame = make_video(tmp_path / "clip.mp4", frames=4), make_image(tmp_path / "frame.png")
    data = tmp_path / "dataset"
    votes = [{"judge": "qwen", "reason": TRICKY}]
    for n in range(2):
        write_sample(data, clip=clip, task="text_to_video", prompt=f"{TRICKY} {n}", seed=n, first_frame=frame,
                     enhanced_prompt=TRICKY, votes=votes)
    samples = read_dataset(data)
    assert [(s.id, s.prompt, s.votes) for s in samples] == [("000001", f"{TRICKY} 0", votes),
                                                             ("000002", f"{TRICKY} 1", votes)]
    assert len(physical_lines(data / "metadata.jsonl")) == 2


def test_a_transcript_and_its_readers_keep_records_whose_text_holds_line_separators(tmp_path: Path):
    path = tmp_path / "transcript.jsonl"
    writer = TranscriptWriter(path)
    for n in range(3):
        writer.append(writer.make("note", "runner", "Note", {"text": f"{TRICKY} {n}"}))
    records, problems = scan_transcript(path)
    assert not problems and [r.message["text"] for r in records] == [f"{TRICKY} {n}" for n in range(3)]
    assert len(physical_lines(path)) == 3
    assert len(TranscriptWriter(path).records) == 3  # a writer that opens it again drops nothing


def test_batch_requests_and_seeds_hold_line_separators(tmp_path: Path):
    lines = [{"text": TRICKY, "name": f"fox{SEPARATORS}"}, {"text": "a lighthouse"}]
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    found, errors = read_requests(requests)
    assert not errors and [(r.text, r.name, r.label) for r in found] == [
        (TRICKY, f"fox{SEPARATORS}", f"{requests}:1"), ("a lighthouse", None, f"{requests}:2")]

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_bytes(requests.read_bytes())
    assert [s.text for s in read_seeds(seeds)] == [TRICKY, "a lighthouse"]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": line["text"]}, ensure_ascii=False) + "\n" for line in lines))
    assert [e.prompt for e in load_prompts(prompts)] == [TRICKY, "a lighthouse"]
    text = tmp_path / "seeds.txt"
    text.write_text(f"\ufeff{TRICKY}\r\na lighthouse\r\n", encoding="utf-8")  # a BOM and CRLF: still two prompts
    assert [s.text for s in read_seeds(text)] == [TRICKY.strip(), "a lighthouse"]

    summary = tmp_path / "summary.jsonl"
    write_summary([BatchResult(BatchRequest(TRICKY, name=TRICKY), "request 1")], summary)
    assert len(physical_lines(summary)) == 1 and json.loads(summary.read_text())["name"] == TRICKY


def test_prompt_and_seed_files_must_be_regular_files(tmp_path: Path):
    os.mkfifo(tmp_path / "seeds.txt")
    with pytest.raises(InputError, match="seeds.txt: not a regular file"):
        read_seeds(tmp_path / "seeds.txt")
    with pytest.raises(BadInputError, match="not a regular file"):
        load_prompts(tmp_path / "seeds.txt")
