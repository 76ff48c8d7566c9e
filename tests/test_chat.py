"""`mora chat` in a pseudo-terminal: two turns, the second extending the first's result."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pexpect
import pytest

from mora_agents.media import sha256_file

TURN_TIMEOUT = 300


@pytest.fixture
def chat(tmp_path: Path):
    env = {**os.environ, "HOME": str(tmp_path), "TERM": "xterm-256color", "COLUMNS": "160", "OMP_NUM_THREADS": "1"}
    child = pexpect.spawn(sys.executable, ["-m", "mora_agents", "chat", "--preset", "tiny", "--device", "cpu",
                                           "--seed", "3"],  # the default --out: runs, in the working folder
                          env=env, cwd=str(tmp_path), encoding="utf-8", timeout=60, dimensions=(50, 160))
    child.expect("you> ")
    yield child
    child.close(force=True)


def test_two_turns_where_the_second_extends_the_first(chat, tmp_path: Path) -> None:
    chat.sendline("/video missing.mp4")
    chat.expect("error:.*missing.mp4")
    chat.expect("you> ")
    chat.sendline("/task nope")
    chat.expect("unknown task")
    chat.expect("you> ")
    chat.sendline("a red fox running through snow, 3 seconds")
    chat.expect("plan: task text_to_video")  # the plan shows before the work starts
    chat.expect("done:", timeout=TURN_TIMEOUT)
    chat.expect("you> ")
    chat.sendline("extend it by 3 seconds")
    chat.expect("extend_video")
    chat.expect("done:", timeout=TURN_TIMEOUT)
    chat.expect("you> ")
    chat.sendline("/runs")  # both turns' runs, though --out is relative and the runner's paths absolute
    chat.expect("/runs.*you> ")
    assert re.search("text_to_video .*finished", chat.after) and re.search("extend_video .*finished", chat.after)
    chat.sendline("/quit")
    chat.expect(pexpect.EOF)

    first, second = sorted((tmp_path / "runs").iterdir())
    assert json.loads((first / "plan.json").read_text())["task"] == "text_to_video"
    plan = json.loads((second / "plan.json").read_text())
    assert plan["task"] == "extend_video" and plan["inputs"]["duration"] == 3
    assert sha256_file(second / plan["inputs"]["video"]) == sha256_file(first / "result.mp4")
    assert (tmp_path / ".mora_history").read_text().count("extend it by 3 seconds") == 1


def test_review_on_asks_and_takes_the_answer(chat, tmp_path: Path) -> None:
    chat.sendline("/review on")
    chat.expect("review on")
    chat.sendline("a red fox running through snow, 3 seconds")
    chat.expect("review of step 'enhance'")
    chat.expect("left > ")
    chat.sendline("next")
    chat.expect("review of step 'image'")
    chat.expect("left > ")
    chat.sendline("edit a blue fox")
    chat.expect("review of step 'image'")
    chat.expect("left > ")
    chat.sendline("n")
    chat.expect("done:", timeout=TURN_TIMEOUT)
    chat.sendline("/quit")
    chat.expect(pexpect.EOF)
    (run_dir,) = (tmp_path / "runs").iterdir()
    records = [json.loads(line) for line in (run_dir / "transcript.jsonl").read_text().splitlines()]
    decisions = [r["message"]["content"] for r in records if r["type"].endswith("[ReviewDecision]")]
    assert [(d["decision"], d["text"], d["by"]) for d in decisions] == [
        ("next", None, "human"), ("edit", "a blue fox", "human"), ("next", None, "human")]


def test_ctrl_c_names_the_run_to_resume(chat, tmp_path: Path) -> None:
    chat.sendline("a red fox running through snow, 60 seconds")  # 17 segments: long enough to interrupt
    chat.expect("segments 2/17")
    chat.sendintr()
    chat.expect(r"interrupted\S*: `mora resume (\S+)` continues the run")
    run_dir = Path(chat.match.group(1))
    assert run_dir.parent == (tmp_path / "runs").resolve() and (run_dir / "run.json").is_file()
    chat.expect("you> ")
    chat.sendline("/runs")  # an interrupted run is one of the chat's runs too
    chat.expect("/runs.*you> ")
    assert re.search("text_to_video .*interrupted", chat.after)
    chat.sendline("/quit")
    chat.expect(pexpect.EOF)
