"""`mora serve`'s HTTP API against a real server process on 127.0.0.1 (tiny preset): runs through the event stream,
review, the queue, cancel and resume, a server killed with SIGKILL, uploads, SOPs, auth and file safety."""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import os
import shutil
import socket
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from conftest import make_image
from fastapi import FastAPI
from fastapi.testclient import TestClient
from serve_server import Server, events, follow
from studio_folders import make_data_folder
from typer.testing import CliRunner

from mora_agents.cli import app
from mora_agents.errors import InputError, MoraError
from mora_agents.media import sha256_file
from mora_agents.runs.catalog import read_info, run_status
from mora_agents.runs.runner import RunOptions
from mora_agents.runs.transcript import read_transcript
from mora_agents.serve import ServeConfig, bind, create_app
from mora_agents.sop.loader import BUILTIN_DIR

FOX = "a red fox running through snow"
SHORT = {"image_to_video": {"frames": 8, "fps": 7}}
"""Clips of 8 frames at 7 fps: 1.14 s each, so a duration of 1 takes one segment and 2.3 two (and runs are quick)."""


@pytest.fixture
def client(server: Server):
    with server.client() as client:
        yield client


@pytest.fixture
def finished(server: Server, client: httpx.Client) -> str:
    """The id of a finished run of the server (one made now if the tests before made none)."""
    done = [r["id"] for r in client.get("/api/runs").json() if r["status"] == "finished"]
    if done:
        return done[0]
    run = create(client)
    assert follow(client, run["id"])[2]["status"] == "finished"
    return run["id"]


def create(client: httpx.Client, text: str = FOX, **fields) -> dict:
    response = client.post("/api/runs", json={"text": text, "duration": 1, "seed": 5, "set": SHORT, **fields})
    assert response.status_code == 201, response.text
    return response.json()


def tool_runs(run_dir: Path, tool: str) -> int:
    return sum(c["name"] == tool for r in read_transcript(run_dir / "transcript.jsonl")
               if r.type == "ToolCallExecutionEvent" for c in r.message["content"])


def step_results(run_dir: Path) -> list[str]:
    records = read_transcript(run_dir / "transcript.jsonl")
    return [f"{r.message['content']['step']}#{r.message['content']['iteration']}" for r in records
            if r.type.endswith("[StepResult]")]


def run_dirs(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.is_dir() else []


def test_a_run_from_submission_to_result_through_the_event_stream(server: Server, client: httpx.Client) -> None:
    run = create(client)
    assert run["status"] in ("queued", "running") and (server.out / run["id"] / "run.json").is_file()
    records, progress, status = follow(client, run["id"])

    assert [r["seq"] for r in records] == list(range(len(records)))
    assert records[0]["type"].endswith("[UserRequest]") and records[-1]["type"].endswith("[RunFinished]")
    assert records[-1]["message"]["content"]["status"] == "finished" and status["status"] == "finished"
    assert records[-1]["media"] == [{**records[-1]["message"]["content"]["result"], "url": status["result"]}]
    reports = [p for p in progress if p]
    assert {p["label"] for p in reports} >= {"text_to_image: base", "image_to_video"}
    assert any(p["done"] == p["total"] for p in reports) and progress[-1] is None

    # the transcript file is the source: a client reconnecting from any sequence number gets the rest of it
    on_disk = read_transcript(server.out / run["id"] / "transcript.jsonl")
    assert [r["message"] for r in records] == [r.message for r in on_disk]
    later, _, _ = follow(client, run["id"], start=7)
    assert [r["seq"] for r in later] == list(range(7, len(records)))
    resumed = [data["seq"] for event, data in events(client, run["id"], headers={"Last-Event-ID": "11"})
               if event == "record"]
    assert resumed == list(range(12, len(records)))

    view = client.get(f"/api/runs/{run['id']}").json()
    assert view["plan"]["task"] == "text_to_video" and view["position"] is None and not view["resumable"]
    video = client.get(view["result"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert sha256_file(server.out / run["id"] / "result.mp4") == records[-1]["message"]["content"]["result"]["sha256"]
    part = client.get(view["result"], headers={"Range": "bytes=0-99"})  # range requests: videos seek
    assert part.status_code == 206 and len(part.content) == 100 and part.content == video.content[:100]
    assert part.headers["content-range"] == f"bytes 0-99/{len(video.content)}"
    page = client.get(view["transcript"])
    assert page.status_code == 200 and "run finished" in page.text and "<video" in page.text
    assert run["id"] in [r["id"] for r in client.get("/api/runs").json()]


def test_review_decisions_the_first_wins_and_a_second_gets_409(server: Server, client: httpx.Client) -> None:
    run = create(client, review=True)
    reviews = []
    for event, data in events(client, run["id"]):
        if event == "status" and data["review"] and data["review"]["seq"] not in [r["seq"] for r in reviews]:
            review = data["review"]
            reviews.append(review)
            assert set(review["options"]) == {"next", "repeat", "edit", "stop"}
            bad = client.post(f"/api/runs/{run['id']}/review", json={"review": review["seq"], "decision": "edit"})
            assert bad.status_code == 400 and "edit needs the new" in bad.json()["detail"]
            answer = {"review": review["seq"], "decision": "edit", "text": "a white fox"} if len(reviews) == 1 else {
                "review": review["seq"], "decision": "next"}
            first = client.post(f"/api/runs/{run['id']}/review", json=answer)
            assert first.status_code == 200, first.text
            second = client.post(f"/api/runs/{run['id']}/review", json={"review": review["seq"], "decision": "stop"})
            assert second.status_code == 409 and "not waiting" in second.json()["detail"]
        elif event == "end":
            assert data["status"] == "finished", data
    run_dir = server.out / run["id"]
    decisions = [r.message["content"] for r in read_transcript(run_dir / "transcript.jsonl")
                 if r.type.endswith("[ReviewDecision]")]
    assert [(d["step"], d["decision"], d["text"], d["by"]) for d in decisions] == [
        ("enhance", "edit", "a white fox", "web"), ("image", "next", None, "web")]
    assert [r["step"] for r in reviews] == ["enhance", "image"]
    assert client.post(f"/api/runs/{run['id']}/review", json={"review": 1, "decision": "next"}).status_code == 409


def test_cancel_at_a_review_point_leaves_the_run_waiting_for_review(server: Server, client: httpx.Client) -> None:
    run = create(client, review=True)
    for event, data in events(client, run["id"]):
        if event == "status" and data["review"]:
            assert client.post(f"/api/runs/{run['id']}/cancel").json()["cancel"] == "stopping"
        elif event == "status" and data["resumable"]:  # the worker let it go
            break
    assert data["status"] == "waiting for review" and data["review"] is None
    assert client.post(f"/api/runs/{run['id']}/resume").json()["status"] in ("queued", "running")
    answered = set()
    for event, data in events(client, run["id"]):  # the same review is asked again, then the next one
        if event == "status" and data["review"] and data["review"]["seq"] not in answered:
            answered.add(data["review"]["seq"])
            answer = {"review": data["review"]["seq"], "decision": "next"}
            assert client.post(f"/api/runs/{run['id']}/review", json=answer).status_code == 200
    assert data["status"] == "finished"
    steps = [r.message["content"]["step"] for r in read_transcript(server.out / run["id"] / "transcript.jsonl")
             if r.type.endswith("[ReviewDecision]")]
    assert steps == ["enhance", "image"]


def test_a_queue_of_three_runs_completes_in_order(server: Server, client: httpx.Client) -> None:
    runs = [create(client, f"a lighthouse number {n} in a storm") for n in range(3)]
    positions = [r["position"] for r in runs if r["position"] is not None]
    assert positions == sorted(positions) and len(positions) >= 2  # the first may have started already
    for run in runs:
        assert follow(client, run["id"])[2]["status"] == "finished"
    infos = [read_info(server.out / r["id"]) for r in runs]
    assert infos[0]["finished"] <= infos[1]["started"] and infos[1]["finished"] <= infos[2]["started"]


def test_cancel_a_queued_run_and_stop_a_running_one_then_resume_both(server: Server, client: httpx.Client) -> None:
    long = create(client, duration=2.3)  # two segments
    queued = create(client)
    assert client.post(f"/api/runs/{queued['id']}/cancel").json() == {"id": queued["id"], "cancel": "dequeued"}
    view = client.get(f"/api/runs/{queued['id']}").json()
    assert view["status"] == "stopped" and view["resumable"] and view["position"] is None
    assert not (server.out / queued["id"] / "transcript.jsonl").exists()  # it never started

    for event, data in events(client, long["id"]):
        if event == "progress" and data and data["step"] == "segments":  # working on its first segment
            assert client.post(f"/api/runs/{long['id']}/cancel").json()["cancel"] == "stopping"
            break
    records, _, status = follow(client, long["id"])
    assert status["status"] == "stopped" and status["resumable"]
    run_dir = server.out / long["id"]
    assert [r["type"] for r in records][-1] == "Stopped" and step_results(run_dir)[-1] == "segments#0"
    assert client.post(f"/api/runs/{long['id']}/cancel").status_code == 409
    assert not status["revisable"]  # no storyboard: a story's revision is refused, and the run stays stopped
    refused = client.post(f"/api/runs/{long['id']}/resume", params={"revise": "storyboard"})
    assert refused.status_code == 409 and "only a story stopped on request" in refused.json()["detail"]

    assert client.post(f"/api/runs/{long['id']}/resume").json()["status"] in ("queued", "running")
    assert client.post(f"/api/runs/{queued['id']}/resume").json()["position"] is not None  # behind the long one
    assert client.post(f"/api/runs/{queued['id']}/cancel").json()["cancel"] == "dequeued"  # off the queue again
    assert client.get(f"/api/runs/{queued['id']}").json()["status"] == "stopped"
    assert client.post(f"/api/runs/{queued['id']}/resume").json()["status"] in ("queued", "running")
    for run in (long, queued):
        assert follow(client, run["id"])[2]["status"] == "finished"
    assert step_results(run_dir) == ["enhance#0", "image#0", "segments#0", "segments.chain#1", "segments#1", "join#0"]
    assert tool_runs(run_dir, "text_to_image") == 1 and tool_runs(run_dir, "image_to_video") == 2
    assert client.post(f"/api/runs/{long['id']}/resume").status_code == 409  # finished


def test_uploads_are_checked_before_a_run_exists(server: Server, client: httpx.Client, tmp_path: Path) -> None:
    before = run_dirs(server.out)
    request = {"request": json.dumps({"text": "the cat starts to dance", "duration": 1, "set": SHORT})}
    cases = [
        ({"image": ("big.png", os.urandom(60_000), "image/png")}, 413, "image 'big.png': larger than the 0.05 MB limit"),
        ({"video": ("big.mp4", os.urandom(1_100_000), "video/mp4")}, 413, "video 'big.mp4': larger than the 1 MB limit"),
        ({"image": ("broken.png", b"not a picture at all", "image/png")}, 400, "broken.png"),
        ({"video": ("cat.png", make_image(tmp_path / "cat.png").read_bytes(), "image/png")}, 400, "cat.png"),
        ({"other": ("cat.png", b"x", "image/png")}, 400, "file field 'other'"),
    ]
    for files, code, message in cases:
        response = client.post("/api/runs", data=request, files=files)
        assert response.status_code == code, response.text
        detail = response.json()["detail"]
        assert message in detail and "\n" not in detail and "upload" not in detail, detail
    bad_json = client.post("/api/runs", json={"text": "x", "colour": 1})
    assert bad_json.status_code == 400 and "colour" in bad_json.json()["detail"]
    assert client.post("/api/runs", json={"text": FOX, "task": "nope"}).status_code == 400
    assert run_dirs(server.out) == before  # no run directory, no leftover upload

    image = make_image(tmp_path / "cat.png")
    response = client.post("/api/runs", data=request, files={"image": ("my cat.png", image.read_bytes(), "image/png")})
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["request"]["images"] == ["inputs/1-my_cat.png"]
    assert follow(client, run["id"])[2]["status"] == "finished"
    assert client.get(f"/api/runs/{run['id']}").json()["task"] == "image_to_video"


def test_sops_list_validate_and_save_only_into_the_user_folder(server: Server, client: httpx.Client) -> None:
    shipped = {p.name: sha256_file(p) for p in BUILTIN_DIR.iterdir()}
    listed = client.get("/api/sops").json()
    assert {s["name"] for s in listed if s["origin"] == "shipped"} >= {"text_to_video", "image_to_video"}
    text = client.get("/api/sops/text_to_video").json()["yaml"]
    assert text == (BUILTIN_DIR / "text_to_video.yaml").read_text()

    broken = text.replace("tool: text_to_image", "tool: text_to_imagex")
    check = client.post("/api/sops/validate", json={"yaml": broken}).json()
    assert not check["valid"] and check["error"].startswith("step 'image', field 'tool': unknown tool 'text_to_imagex'")
    assert client.put("/api/sops/text_to_video", json={"yaml": broken}).status_code == 400
    assert client.put("/api/sops/other", json={"yaml": text}).status_code == 400  # its name field says text_to_video

    mine = text.replace("name: text_to_video", "name: my_video")
    valid = client.post("/api/sops/validate", json={"yaml": mine}).json()
    assert valid["valid"] and valid["name"] == "my_video" and valid["error"] is None
    assert [(n["id"], n["tool"], n["uses"], n["review"], n["repeat"]) for n in valid["steps"]] == [  # the diagram
        ("enhance", None, [], True, False), ("image", "text_to_image", ["enhance"], True, False),
        ("segments", "image_to_video", ["image", "enhance"], False, True), ("join", "concat_videos", ["segments"],
                                                                            False, False)]
    saved = client.put("/api/sops/my_video", json={"yaml": mine}).json()
    assert Path(saved["file"]) == server.sops / "my_video.yaml" and (server.sops / "my_video.yaml").read_text() == mine
    entry = next(s for s in client.get("/api/sops").json() if s["name"] == "my_video")
    assert entry["origin"] == "user" and entry["active"]
    assert {p.name: sha256_file(p) for p in BUILTIN_DIR.iterdir()} == shipped
    assert client.get("/api/sops/nope").status_code == 404


def raw_get(server: Server, path: str, headers: dict[str, str | bytes] | None = None, method: str = "GET"
            ) -> tuple[int, bytes]:
    """A request with the path and headers sent exactly as written (HTTP clients normalise `..` away and send only
    ASCII header values; here a str header is sent as Latin-1 bytes)."""
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def one_line(status: int, body: bytes, expected: int) -> str:
    """The detail of a refusal: the expected status, one short line of JSON (no traceback, no HTML page)."""
    assert status == expected, (status, body[:300])
    detail = json.loads(body)["detail"]
    assert isinstance(detail, str) and "\n" not in detail and len(detail) < 400, detail
    return detail


def log_since(server: Server, offset: int) -> str:
    return server.log.read_bytes()[offset:].decode("utf-8", "replace")


def test_files_outside_run_directories_are_refused(server: Server, client: httpx.Client, tmp_path: Path) -> None:
    runs = client.get("/api/runs").json()
    finished = next(r for r in runs if r["status"] == "finished")["id"]
    secret = tmp_path / "secret.txt"
    secret.write_text("classified")
    (server.out / finished / "artifacts" / "link.txt").symlink_to(secret)
    assert raw_get(server, f"/files/{finished}/run.json")[0] == 200
    for path in [f"/files/{finished}/../../secret.txt", f"/files/{finished}/%2e%2e/%2e%2e/secret.txt",
                 f"/files/{finished}/artifacts/../../{finished}/run.json", f"/files/{finished}/%2F{secret}",
                 f"/files/{finished}//{secret}", f"/files/{finished}/artifacts/link.txt",
                 f"/files/{finished}/..%5C..%5Csecret.txt", "/files/../runs/x", "/files/..%2F..%2Fsecret.txt/x",
                 f"/files/{finished}/nothing.txt", "/files/nope/run.json", "/files/.upload-x/run.json",
                 "/api/runs/..%2Fx", "/files/%2Fetc/passwd", f"/files/{finished}/run.json%00.txt"]:
        status, body = raw_get(server, path)
        assert status in (403, 404) and b"classified" not in body, (path, status, body)


def test_run_directories_that_are_links_out_of_the_folder_are_not_served(server: Server, client: httpx.Client,
                                                                        finished: str, tmp_path: Path) -> None:
    """A run directory is served only if its real path is in --out: not a link to a run elsewhere, nor a folder
    whose run.json is one; a loop of links inside a run is no file either."""
    elsewhere = Path(shutil.copytree(server.out / finished, tmp_path / "elsewhere"))
    (elsewhere / "secret.txt").write_text("classified")
    linked, half = server.out / "20990101-000000-linked", server.out / "20990101-000000-half"
    linked.symlink_to(elsewhere)
    half.mkdir()
    (half / "run.json").symlink_to(elsewhere / "run.json")
    (half / "secret.txt").write_text("classified")
    loop = server.out / finished / "artifacts" / "loop"
    loop.symlink_to("loop")
    try:
        listed = [r["id"] for r in client.get("/api/runs").json()]
        assert finished in listed and linked.name not in listed and half.name not in listed
        for run in (linked.name, half.name):
            for method, path in [("GET", f"/api/runs/{run}"), ("GET", f"/files/{run}/secret.txt"),
                                 ("GET", f"/files/{run}/run.json"), ("GET", f"/files/{run}/result.mp4"),
                                 ("GET", f"/files/{run}/transcript.html"), ("GET", f"/api/runs/{run}/events"),
                                 ("POST", f"/api/runs/{run}/resume"), ("POST", f"/api/runs/{run}/cancel")]:
                status, body = raw_get(server, path, method=method)
                assert "no such run" in one_line(status, body, 404) and b"classified" not in body, (method, path)
        previous = client.post("/api/runs", json={"text": "extend it", "previous": linked.name})
        assert "no such run" in one_line(previous.status_code, previous.content, 404)
        assert "no such file" in one_line(*raw_get(server, f"/files/{finished}/artifacts/loop"), 404)
    finally:
        linked.unlink()
        shutil.rmtree(half)
        loop.unlink()


def test_names_and_headers_of_any_length_or_kind_are_refused_in_one_line(server: Server, client: httpx.Client,
                                                                         finished: str) -> None:
    """Whatever a client puts in a path or a header (thousands of characters, names the file system cannot hold,
    non-ASCII digits, a malformed host) gets a one-line 4xx, never a 500; the server logs no traceback."""
    offset = server.log.stat().st_size
    long_id, wide_id = "a" * 5000, "é" * 200  # 200 characters, 400 bytes: longer than a file name can be
    for method, path in [(m, f"/api/runs/{run}{tail}") for run in (long_id, wide_id)
                         for m, tail in (("GET", ""), ("GET", "/events"), ("POST", "/resume"), ("POST", "/cancel"))] + [
            ("GET", f"/files/{long_id}/run.json"), ("GET", f"/files/{wide_id}/transcript.html"),
            ("GET", f"/files/{finished}/{'a' * 10_000}"), ("GET", f"/files/{finished}/artifacts/{'é' * 200}"),
            ("GET", f"/files/{finished}/{'a/' * 3000}x")]:
        status, body = raw_get(server, quote(path), method=method)
        assert "no such" in one_line(status, body, 404), (method, path[:80])
    review = client.post(f"/api/runs/{long_id}/review", json={"review": 1, "decision": "next"})
    assert "no such run" in one_line(review.status_code, review.content, 404)

    events = f"/api/runs/{finished}/events"
    for value in ("9" * 5000, "²", "٣".encode(), "-1", "12abc", " "):  # '²'.isdigit() is True
        detail = one_line(*raw_get(server, events, {"Last-Event-ID": value}), 422)
        assert detail.startswith("header.last-event-id: "), detail
    assert one_line(*raw_get(server, f"{events}?from={'9' * 5000}"), 422).startswith("query.from: ")

    for method in ("GET", "PUT"):
        response = client.request(method, f"/api/sops/{'a' * 300}", json={"yaml": "name: x"})
        assert "at most 64 characters" in one_line(response.status_code, response.content, 422)
    text = (BUILTIN_DIR / "text_to_video.yaml").read_text().replace("name: text_to_video", f"name: {'a' * 300}")
    check = client.post("/api/sops/validate", json={"yaml": text}).json()
    assert not check["valid"] and "at most 64 characters" in check["error"]

    assert "not a host name" in one_line(*raw_get(server, "/api/info", {"Host": "[::1"}), 400)
    assert "not a host name" in one_line(*raw_get(server, "/api/info", {"Host": "127.0.0.1:99999"}), 400)
    for origin in ("http://[::1", "http://127.0.0.1:99999", "null", "x" * 5000):
        response = client.post("/api/runs", json={"text": FOX}, headers={"Origin": origin})
        assert "cross-origin" in one_line(response.status_code, response.content, 403)

    # a body that ends before its Content-Length, the connection then closed: the server just drops it
    with socket.create_connection((server.host, server.port), timeout=30) as connection:
        connection.sendall(b"POST /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 1000\r\n\r\n{\"text\": \"a fox\"}")
        connection.shutdown(socket.SHUT_WR)
        connection.recv(100)
    assert client.get("/api/info").status_code == 200
    log = log_since(server, offset)
    assert "Traceback" not in log and "Exception" not in log, log[-3000:]


async def _cut_short(app: FastAPI, method: str, path: str, content_type: str) -> tuple[int, bytes]:
    """A request to the app whose body stops after a few of the 1000 bytes it announced, and whose client then goes
    away (what uvicorn tells the app when a connection closes early)."""
    messages = [{"type": "http.request", "body": b'{"text": "a fox"', "more_body": True}]
    sent = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await app({"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
               "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
               "headers": [(b"host", b"127.0.0.1:7860"), (b"content-type", content_type.encode()),
                           (b"content-length", b"1000")], "client": ("127.0.0.1", 50000),
               "server": ("127.0.0.1", 7860)}, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_a_body_shorter_than_its_content_length_is_one_line_400(tmp_path: Path) -> None:
    options = RunOptions(preset="tiny", device="cpu", out=tmp_path / "runs", sops_dir=tmp_path / "sops")
    served = create_app(ServeConfig(options))
    for method, path, kind in [("POST", "/api/runs", "application/json"),
                               ("POST", "/api/runs", "multipart/form-data; boundary=x"),
                               ("PUT", "/api/sops/mine", "application/json"),  # FastAPI reads these bodies
                               ("POST", "/api/sops/validate", "application/json"),
                               ("POST", "/api/runs/x/review", "application/json")]:
        detail = one_line(*asyncio.run(_cut_short(served, method, path, kind)), 400)
        assert detail in ("the request's body ended before its Content-Length (1000 bytes)",
                          "There was an error parsing the body"), (method, path, detail)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_failure_inside_the_server_is_a_one_line_500(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(*args: object, **kwargs: object) -> None:
        raise MoraError(f"{tmp_path}: cannot write the new run directory (No space left on device); nothing was kept")

    monkeypatch.setattr("mora_agents.serve.app.prepare_run", full_disk)
    monkeypatch.setattr("mora_agents.serve.app.list_sops", lambda folder: 1 / 0)
    options = RunOptions(preset="tiny", device="cpu", out=tmp_path / "runs", sops_dir=tmp_path / "sops")
    with TestClient(create_app(ServeConfig(options)), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as local:
        response = local.post("/api/runs", json={"text": FOX})
        assert "(No space left on device)" in one_line(response.status_code, response.content, 500)
        response = local.get("/api/sops")
        assert one_line(response.status_code, response.content, 500) == (
            "internal error: ZeroDivisionError: division by zero")


def test_media_types_and_host_names_compare_without_case(server: Server, client: httpx.Client) -> None:
    refused = json.dumps({"text": FOX, "task": "nope"})  # refused after the checks in question: no run is made
    for kind in ("Application/JSON", "APPLICATION/json; charset=UTF-8"):
        response = client.post("/api/runs", content=refused, headers={"Content-Type": kind})
        assert "--task nope: unknown task" in one_line(response.status_code, response.content, 400), kind
    request = client.build_request("POST", "/api/runs", data={"request": refused},
                                   files={"image": ("cat.png", b"not an image", "image/png")})
    request.headers["Content-Type"] = request.headers["Content-Type"].replace("multipart/form-data",
                                                                              "Multipart/Form-Data")
    response = client.send(request)
    assert "--task nope" in one_line(response.status_code, response.content, 400)  # the body was read

    port = server.port
    for origin, host in [(f"http://LOCALHOST:{port}", f"localhost:{port}"), (f"http://localhost:{port}", f"LocalHost:{port}"),
                         (f"HTTP://127.0.0.1:{port}", f"127.0.0.1:{port}")]:
        response = client.post("/api/runs", content=refused, headers={"Origin": origin, "Host": host,
                                                                       "Content-Type": "application/json"})
        assert "--task nope" in one_line(response.status_code, response.content, 400), (origin, host)
    for origin in (f"http://localhost:{port + 1}", "http://attacker.example", f"http://localhost.attacker.example:{port}"):
        response = client.post("/api/runs", content=refused, headers={"Origin": origin,
                                                                       "Content-Type": "application/json"})
        assert response.status_code == 403, origin


def test_a_loopback_server_refuses_other_host_names_and_cross_origin_writes(server: Server) -> None:
    assert raw_get(server, "/api/info", {"Host": "attacker.example:80"})[0] == 400  # DNS rebinding
    response = httpx.post(f"{server.url}/api/runs", json={"text": FOX}, headers={"Origin": "http://attacker.example"})
    assert response.status_code == 403
    assert "default-src 'self'" in httpx.get(f"{server.url}/").headers["content-security-policy"]
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]  # the API's documentation
    assert {"/api/runs", "/api/runs/{run_id}/events", "/api/runs/{run_id}/review", "/api/sops/{name}"} <= paths.keys()
    assert "multipart/form-data" in paths["/api/runs"]["post"]["requestBody"]["content"]
    assert httpx.get(f"{server.url}/docs").status_code == 200


def test_resume_after_the_server_is_killed_with_sigkill(tmp_path: Path) -> None:
    first = Server(tmp_path).start()
    try:
        with first.client() as client:
            run = create(client, duration=2.3)  # two segments
            for event, data in events(client, run["id"]):
                if (event == "record" and data["type"].endswith("[StepRequest]")
                        and data["message"]["content"]["step"] == "segments"
                        and data["message"]["content"]["iteration"] == 1):
                    first.kill()
                    break
    finally:
        first.stop()
    run_dir = first.out / run["id"]
    assert run_status(read_info(run_dir)) == "interrupted" and step_results(run_dir)[-1] == "segments.chain#1"

    second = Server(tmp_path).start()
    try:
        with second.client() as client:
            records, _, status = follow(client, run["id"])
    finally:
        second.stop()
    assert status["status"] == "finished"
    assert [r["message"]["text"] for r in records if r["kind"] == "note"] == [
        "resumed a run that was interrupted from its last checkpoint"]
    assert step_results(run_dir) == ["enhance#0", "image#0", "segments#0", "segments.chain#1", "segments#1",
                                     "join#0"]  # nothing finished is redone
    assert tool_runs(run_dir, "text_to_image") == 1 and tool_runs(run_dir, "image_to_video") == 2


def test_auth_is_required_off_localhost(tmp_path: Path) -> None:
    refused = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--out", str(tmp_path / "runs"),
                                       "--sops", str(tmp_path / "sops")], env={"MORA_TOKEN": ""})
    assert refused.exit_code == 2 and "--host 0.0.0.0: serving beyond this machine needs --token" in refused.output
    assert not (tmp_path / "runs").exists()

    options = RunOptions(preset="tiny", device="cpu", out=tmp_path / "runs", sops_dir=tmp_path)
    with TestClient(create_app(ServeConfig(options, token="s3cret", local_only=False))) as anyone:
        for path in ("/api/info", "/api/runs", "/", "/docs", "/openapi.json", "/files/x/run.json"):
            response = anyone.get(path)
            assert response.status_code == 401 and "token" in response.json()["detail"]
        assert anyone.post("/api/runs", json={"text": FOX}).status_code == 401
        assert anyone.get("/api/info", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert anyone.get("/api/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert anyone.get("/?token=wrong").status_code == 401
        # the page: ?token= sets a cookie and drops the token from the address
        response = anyone.get("/?token=s3cret", follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/"
        assert "httponly" in response.headers["set-cookie"].lower()
        assert anyone.get("/").status_code == 200 and anyone.get("/api/runs").json() == []


def test_a_damaged_run_directory_is_listed_as_damaged_and_never_breaks_the_list(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    (out / "20260101-000000-broken").mkdir(parents=True)
    (out / "20260101-000000-broken" / "run.json").write_text("{not json", encoding="utf-8")
    options = RunOptions(preset="tiny", device="cpu", out=out, sops_dir=tmp_path)
    with TestClient(create_app(ServeConfig(options)), base_url="http://127.0.0.1") as local:
        [listed] = local.get("/api/runs").json()
        assert listed["id"] == "20260101-000000-broken" and listed["status"] == "damaged"
        assert "run.json: damaged" in listed["error"] and not listed["resumable"]
        one = local.get("/api/runs/20260101-000000-broken")
        assert one.status_code == 400 and "run.json: damaged" in one.json()["detail"]


def test_serve_checks_its_run_options_before_serving(tmp_path: Path) -> None:
    for args, message in ((["--adapters", str(tmp_path / "nowhere")], "nowhere"),
                          (["--memory-profile", "8gb"], "--memory-profile 8gb: unknown"),
                          (["--out", str(tmp_path / "missing" / "runs")], "does not exist"),
                          (["--sops", str(BUILTIN_DIR)], "the shipped SOPs' folder"),
                          (["--data", str(tmp_path)], "not a data folder (sets.json)")):
        refused = CliRunner().invoke(app, ["serve", "--preset", "tiny", "--sops", str(tmp_path / "sops"),
                                           "--out", str(tmp_path / "runs"), *args])
        assert refused.exit_code == 2 and message in refused.stderr, (args, refused.output)
        assert len(refused.stderr.splitlines()) == 1


def test_a_server_bound_to_another_loopback_address_answers_there(tmp_path: Path) -> None:
    server = Server(tmp_path, host="127.0.0.2").start()  # start() waits for an answer at 127.0.0.2
    try:
        for host in (f"127.0.0.2:{server.port}", f"localhost:{server.port}", f"127.0.0.1:{server.port}"):
            assert raw_get(server, "/api/info", {"Host": host})[0] == 200, host
        assert "loopback" in one_line(*raw_get(server, "/api/info", {"Host": "attacker.example"}), 400)
    finally:
        server.stop()


def test_serve_checks_its_port_before_serving(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        for args, message in ((["--port", "99999"], "'--port': Input should be less than or equal to 65535"),
                              (["--port=-1"], "'--port': Input should be greater than or equal to 0"),
                              (["--port", str(busy)], f"--port {busy}: cannot listen there (Address already in use)"),
                              (["--host", "192.0.2.1", "--token", "t"], "--host 192.0.2.1 --port 7860: cannot listen")):
            refused = CliRunner().invoke(app, ["serve", "--preset", "tiny", "--sops", str(tmp_path / "sops"),
                                               "--out", str(tmp_path / "runs"), *args])
            assert refused.exit_code == 2 and message in refused.stderr, (args, refused.output)
            assert len(refused.stderr.splitlines()) == 1, refused.stderr
    assert not (tmp_path / "sops").exists()  # the port is checked before anything is made
    with pytest.raises(InputError, match="--port 70000: not a port"):
        bind("127.0.0.1", 70000)


def test_delete_a_run_only_when_no_one_runs_it(server: Server, client: httpx.Client) -> None:
    run = create(client)
    refused = client.delete(f"/api/runs/{run['id']}")
    assert refused.status_code == 409 and "cancel it first" in refused.json()["detail"]
    client.post(f"/api/runs/{run['id']}/cancel").raise_for_status()
    assert follow(client, run["id"])[2]["status"] == "stopped"
    assert client.delete(f"/api/runs/{run['id']}").json() == {"id": run["id"], "deleted": True}
    assert not (server.out / run["id"]).exists()
    assert client.delete(f"/api/runs/{run['id']}").status_code == 404


def test_posters_and_sessions(server: Server, client: httpx.Client, finished: str) -> None:
    from PIL import Image

    view = client.get(f"/api/runs/{finished}").json()
    poster = client.get(view["poster"])
    assert poster.status_code == 200 and poster.headers["content-type"] == "image/webp"
    result = read_transcript(server.out / finished / "transcript.jsonl")[-1].message["content"]["result"]
    assert Image.open(io.BytesIO(poster.content)).size == (result["width"], result["height"])
    assert client.get(f"/api/runs/{finished}/poster/..%2Frun.json").status_code in (403, 404)
    assert client.get(f"/api/runs/{finished}/poster/nothing.mp4").status_code == 404

    session = "chat-0123456789"
    assert client.get(f"/api/sessions/{session}").json() == {"id": session, "runs": [], "previous": None}
    for _ in range(2):  # once only
        added = client.post(f"/api/sessions/{session}/runs", json={"run": finished}).json()
    assert added == {"id": session, "runs": [finished], "previous": finished}
    assert json.loads((server.out / ".sessions" / f"{session}.json").read_text()) == {"runs": [finished]}
    assert client.post(f"/api/sessions/{session}/runs", json={"run": "nope"}).status_code == 404
    bad = client.get("/api/sessions/x")
    assert bad.status_code == 400 and "not a session id" in bad.json()["detail"]


def test_data_folders_decisions_trainings_and_adapters_per_request(tmp_path: Path) -> None:
    data = make_data_folder(tmp_path / "data")
    training = tmp_path / "trained"  # an adapter card the page lists, whose weights do not load
    training.mkdir()
    (training / "card.json").write_text(json.dumps({"agents": {"image_to_video": {}}, "steps": 2,
                                                    "losses": [{"step": 1, "total": 0.5}]}))
    options = RunOptions(preset="tiny", device="cpu", out=tmp_path / "runs", sops_dir=tmp_path / "sops")
    with TestClient(create_app(ServeConfig(options, data=[data, training])), base_url="http://127.0.0.1") as local:
        assert local.get("/api/data").json() == [{"id": "data", "path": str(data), "loop": None, "error": None,
                                                  "sets": {"undecided": 1, "accepted": 1, "discarded": 0,
                                                           "unjudged": 0}}]
        sets = {s["id"]: s for s in local.get("/api/data/data").json()["sets"]}
        vote = sets["p001"]["votes"][0]
        assert vote["ranking"] == [3, 1, 2] and vote["labels"] == {"1": 3, "2": 1, "3": 2} and vote["aspect"]
        video = sets["p001"]["candidates"][0]["video"]
        assert local.get(video).content == (data / "runs" / "p001-1" / "result.mp4").read_bytes()
        assert local.get("/api/data/data/files/..%2Fdata%2Fsets.json").status_code in (403, 404)
        assert local.get("/api/data/nothing").status_code == 404

        assert local.post("/api/data/data/sets/p002", json={"choice": 1}).status_code == 409  # the judges decided
        wrong = local.post("/api/data/data/sets/p001", json={"choice": 7})
        assert wrong.status_code == 400 and "not one of its candidates (1, 2, 3)" in wrong.json()["detail"]
        decided = local.post("/api/data/data/sets/p001", json={"choice": None, "name": "alice"}).json()
        assert decided["status"] == "discarded" and decided["decision"]["by"] == "person:alice"
        assert local.post("/api/data/data/sets/p001", json={"choice": 1}).status_code == 409  # the first wins
        assert read_log_status(data) == {"p001": "discarded", "p002": "accepted"}

        [listed] = local.get("/api/training").json()
        assert listed["kind"] == "training" and listed["adapters"][0]["losses"] == [{"step": 1, "total": 0.5}]
        unknown = local.post("/api/runs", json={"text": FOX, "adapters": str(tmp_path)})
        assert unknown.status_code == 400 and "not one of the trainings this server shows" in unknown.json()["detail"]
        broken = local.post("/api/runs", json={"text": FOX, "adapters": str(training)})
        assert broken.status_code == 400 and str(training) in broken.json()["detail"]
        assert not (tmp_path / "runs").exists() or not any(p for p in (tmp_path / "runs").iterdir()
                                                            if (p / "run.json").exists())

        docs = local.get("/docs").text  # Swagger UI from the package, no CDN
        assert "/docs/assets/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
        assert local.get("/docs/assets/swagger-ui-bundle.js").status_code == 200


def read_log_status(data: Path) -> dict[str, str]:
    return {k: v["status"] for k, v in json.loads((data / "selection.json").read_text())["sets"].items()}


def test_mcp_takes_the_system_option(tmp_path: Path) -> None:
    refused = CliRunner().invoke(app, ["mcp", "--preset", "tiny", "--system", "sdxl", "--out", str(tmp_path / "runs"),
                                       "--sops", str(tmp_path / "sops")])
    assert refused.exit_code == 2 and "--system sdxl: unknown (choose from svd, osp)" in refused.stderr
