"""The OpenAI Videos API (/v1) and MCP over streamable HTTP (/mcp) of a real `mora serve --preset tiny` process on
127.0.0.1, driven by their official clients (`openai`, `mcp`), with a token and a webhook listener."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import make_image
from PIL import Image
from serve_server import Server

from mora_agents.media import read_video
from mora_agents.runs.catalog import read_info
from mora_agents.runs.runner import RunOptions
from mora_agents.serve.hub import Hub
from mora_agents.serve.webhooks import new_secret, record
from mora_agents.serve.worker import Worker

warnings.filterwarnings("ignore", category=DeprecationWarning)  # the client marks the Videos API deprecated

TOKEN = "s3cret-token"
SECRET = new_secret()
SHORT = {"set": {"image_to_video": {"frames": 8, "fps": 7}}}
"""Clips of 8 frames at 7 fps (1.14 s): one segment for `seconds="1"`, and quick runs."""


class Listener:
    """A webhook receiver on 127.0.0.1 that answers 500 to the first delivery (so that it is retried), then 204."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                listener.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(500 if len(listener.received) == 1 else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, video_id: str) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for h, b in self.received if json.loads(b)["data"]["id"] == video_id]


@pytest.fixture(scope="module")
def listener():
    listener = Listener()
    yield listener
    listener.server.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, listener: Listener):
    server = Server(tmp_path_factory.mktemp("protocols"), "--webhook", listener.url, token=TOKEN,
                    env={"MORA_WEBHOOK_SECRET": SECRET}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=TOKEN, webhook_secret=SECRET)


def wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_create_and_poll_download_list_and_a_signed_webhook(server: Server, client: openai.OpenAI,
                                                            listener: Listener, tmp_path: Path) -> None:
    video = client.videos.create_and_poll(prompt="a red fox running through snow", seconds="1", size="64x64",
                                          extra_body={**SHORT, "seed": 7}, poll_interval_ms=200)
    assert video.status == "completed" and video.progress == 100 and video.error is None
    assert (video.model, video.size, video.seconds, video.prompt) == ("mora", "64x64", "1.14",
                                                                      "a red fox running through snow")
    assert video.created_at <= video.completed_at <= time.time() + 1

    mp4 = tmp_path / "video.mp4"
    client.videos.download_content(video.id).write_to_file(mp4)
    frames, fps = read_video(mp4)
    assert frames.shape == (8, 64, 64, 3) and fps == 7
    thumbnail = Image.open(io.BytesIO(client.videos.download_content(video.id, variant="thumbnail").content))
    sheet = Image.open(io.BytesIO(client.videos.download_content(video.id, variant="spritesheet").content))
    assert (thumbnail.format, thumbnail.size, sheet.format, sheet.size) == ("WEBP", (64, 64), "JPEG", (256, 128))

    # one run list: the page's API sees the video as a run, with what the API asked recorded
    run = httpx.get(f"{server.url}/api/runs/{video.id}", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert run["status"] == "finished" and run["task"] == "text_to_video"
    info = read_info(server.out / video.id)
    assert info["seed"] == 7 and info["overrides"] == {"text_to_image": {"width": 64, "height": 64},
                                                       "image_to_video": {"width": 64, "height": 64, "frames": 8, "fps": 7}}
    assert client.videos.retrieve(video.id).model_dump() == video.model_dump()

    # the webhook: refused once (500), delivered on the retry, signed as the client verifies, recorded in the run
    wait_for(lambda: len(listener.events(video.id)) == 2)
    (first, _), (headers, body) = listener.events(video.id)
    assert first["webhook-id"] == headers["webhook-id"]  # the same event, tried again
    event = client.webhooks.unwrap(body, headers)
    assert (event.type, event.data.id, event.object) == ("video.completed", video.id, "event")
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.verify_signature(body.replace(b"completed", b"failed"), headers)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.verify_signature(body, headers, secret=new_secret())
    attempts = [json.loads(line) for line in (server.out / video.id / "webhooks.jsonl").read_text().splitlines()]
    assert [(a["attempt"], a["status_code"], a["delivered"]) for a in attempts] == [(1, 500, False), (2, 204, True)]
    assert attempts[0]["retry_in"] == 1.0 and attempts[0]["event"] == attempts[1]["event"] == headers["webhook-id"]


def test_progress_moves_and_a_cancelled_video_fails_with_a_webhook(server: Server, client: openai.OpenAI,
                                                                  listener: Listener) -> None:
    first = client.videos.create(prompt="a lighthouse in a storm", seconds="2.3", extra_body=SHORT)  # 2 segments
    queued = client.videos.create(prompt="a quiet harbour", seconds="1", extra_body=SHORT)
    assert queued.status == "queued" and queued.progress == 0

    # the page cancels the queued one: the API shows it failed, and the webhook says so
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.post(f"{server.url}/api/runs/{queued.id}/cancel", headers=headers).json()["cancel"] == "dequeued"
    failed = client.videos.retrieve(queued.id)
    assert failed.status == "failed" and failed.error.code == "stopped" and "resume" in failed.error.message
    progress = []
    while (now := client.videos.retrieve(first.id)).status != "completed":
        assert now.status in ("queued", "in_progress"), now
        progress.append(now.progress)
        time.sleep(0.05)
    assert progress == sorted(progress) and len({p for p in progress if 0 < p < 100}) >= 3, progress
    wait_for(lambda: any(json.loads(b)["type"] == "video.failed" for _, b in listener.events(queued.id)))

    listed = client.videos.list(order="asc", limit=1)
    ids = [v.id for v in listed]  # the client follows `after` from page to page
    assert first.id in ids and queued.id in ids and ids == sorted(ids) and len(listed.data) == 1
    newest = client.videos.list(limit=2).data
    assert [v.id for v in newest] == ids[::-1][:2]
    after = client.videos.list(order="asc", after=first.id).data
    assert [v.id for v in after] == ids[ids.index(first.id) + 1:]

    assert client.videos.delete(queued.id).deleted
    assert not (server.out / queued.id).exists()
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(queued.id)


def test_errors_as_the_client_raises_them(server: Server, client: openai.OpenAI) -> None:
    cases = [({"size": "64x60"}, "size", "multiple of 8"), ({"size": "wide"}, "size", "WIDTHxHEIGHT"),
             ({"model": "sora-2"}, "model", "unknown"), ({"seconds": "500"}, "seconds", "1 to 120"),
             ({"extra_body": {"set": {"image_to_video": {"colour": 1}}}}, "set", "no such parameter"),
             ({"model": "extend_video"}, "model", "takes a video")]
    before = sorted(p.name for p in server.out.iterdir())
    for arguments, param, message in cases:
        with pytest.raises(openai.BadRequestError) as raised:
            client.videos.create(prompt="a fox", **arguments)
        error = raised.value.body
        assert raised.value.status_code == 400 and error["param"] == param and message in error["message"], error
        assert error["type"] == "invalid_request_error" and raised.value.response.headers["x-should-retry"] == "false"
    with pytest.raises(openai.BadRequestError) as raised:
        client.videos.create(prompt="a fox", model="sora-2")
    assert raised.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as raised:
        client.videos.create(prompt="  ")
    assert raised.value.param == "prompt"
    assert sorted(p.name for p in server.out.iterdir()) == before  # no run directory, no leftover upload

    for call in (lambda: client.videos.retrieve("no-such-video"), lambda: client.videos.delete("no-such-video"),
                 lambda: client.videos.download_content("no-such-video"),
                 lambda: client.videos.remix("no-such-video", prompt="x"),
                 lambda: client.videos.get_character("char_" + "0" * 24)):
        with pytest.raises(openai.NotFoundError) as raised:
            call()
        assert raised.value.body["type"] == "invalid_request_error" and "no " in raised.value.body["message"]
    with pytest.raises(openai.BadRequestError) as raised:
        client.videos.download_content(next(p.name for p in server.out.iterdir() if (p / "run.json").exists()),
                                       variant="poster")  # type: ignore[arg-type]
    assert raised.value.param == "variant"

    wrong = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        wrong.videos.list()
    assert raised.value.body["code"] == "invalid_api_key" and "token" in raised.value.body["message"]
    unknown = httpx.get(f"{server.url}/v1/nothing", headers={"Authorization": f"Bearer {TOKEN}"})
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "invalid_request_error"


def test_image_reference_character_remix_extend_edit(server: Server, client: openai.OpenAI, tmp_path: Path) -> None:
    image = make_image(tmp_path / "cat.png", (96, 64), (40, 160, 90))
    from_image = client.videos.create(prompt="the cat starts to dance", input_reference=image, seconds="1",
                                      extra_body=SHORT)
    character = client.videos.create_character(name="Ada", video=make_image(tmp_path / "ada.png", (64, 64),
                                                                               (200, 30, 200)))
    assert character.name == "Ada" and client.videos.get_character(character.id).model_dump() == character.model_dump()
    starring = client.videos.create(prompt="Ada waves", seconds="1",
                                    extra_body={**SHORT, "input_reference": {"file_id": character.id}})
    for video in (from_image, starring):
        assert client.videos.poll(video.id, poll_interval_ms=200).status == "completed"
        info = read_info(server.out / video.id)
        assert info["task"] == "image_to_video" and len(info["request"]["images"]) == 1
    starring_input = Image.open(server.out / starring.id / read_info(server.out / starring.id)["request"]["images"][0])
    assert starring_input.getpixel((5, 5)) == (200, 30, 200)  # the character's picture is the first frame's source
    assert read_info(server.out / starring.id)["openai"]["character"] == character.id

    remix = client.videos.remix(from_image.id, prompt="the cat starts to sing")
    extended = client.videos.extend(prompt="the cat bows", seconds="1", extra_body=SHORT,
                                    video=("cat.mp4", client.videos.download_content(from_image.id).content,
                                           "video/mp4"))
    edited = client.videos.edit(prompt="make it look like winter", video=openai.omit,
                                extra_body={**SHORT, "video": {"id": from_image.id}})
    remix, extended, edited = (client.videos.poll(v.id, poll_interval_ms=200) for v in (remix, extended, edited))
    assert remix.status == extended.status == edited.status == "completed"
    assert remix.remixed_from_video_id == from_image.id and remix.prompt == "the cat starts to sing"
    source, again = read_info(server.out / from_image.id), read_info(server.out / remix.id)
    assert (again["seed"], again["task"], again["overrides"]) == (source["seed"], "image_to_video", source["overrides"])
    assert float(extended.seconds) == pytest.approx(8 / 7 + 7 / 7, abs=0.01)  # the input, then one segment less the shared frame
    assert (read_info(server.out / extended.id)["task"], read_info(server.out / edited.id)["task"]) == (
        "extend_video", "edit_video")


def test_mcp_over_streamable_http_with_the_token(server: Server) -> None:
    pytest.importorskip("mcp")
    import httpx2  # the MCP SDK's HTTP client
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async def session(token: str) -> tuple[list[str], dict, list[tuple[float, str]], bytes]:
        progress: list[tuple[float, str]] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append((done, message or ""))

        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=300))
        async with http, Client(streamable_http_client(f"{server.url}/mcp", http_client=http)) as mcp:
            tools = [t.name for t in (await mcp.list_tools()).tools]
            result = await mcp.call_tool("generate", {"prompt": "a paper boat on a pond", "seconds": 1,
                                                      "settings": {"image_to_video": {"frames": 8, "fps": 7}}},
                                         progress_callback=on_progress)
            assert not result.is_error, result.content
            content = (await mcp.read_resource(result.structured_content["result"]["uri"])).contents[0]
            return tools, result.structured_content, progress, content.blob

    tools, video, progress, blob = asyncio.run(session(TOKEN))
    assert {"generate", "image_to_video", "extend", "edit", "connect", "status", "result"} <= set(tools)
    assert video["status"] == "completed" and video["mora_status"] == "finished" and "path" not in video["result"]
    assert progress[-1] == (100, "completed") and any("image_to_video" in m for _, m in progress)
    assert [p for p, _ in progress] == sorted(p for p, _ in progress)
    assert (server.out / video["id"] / "result.mp4").read_bytes() == base64.b64decode(blob)

    with pytest.raises(Exception):  # noqa: B017 - the SDK wraps the refusal in task-group errors
        asyncio.run(session("wrong"))
    refused = httpx.post(f"{server.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                         headers={"Authorization": "Bearer wrong", "Accept": "application/json, text/event-stream"})
    assert refused.status_code == 401 and "token" in refused.json()["detail"]  # the same rule as the page's


def test_model_mora_osp_runs_the_osp_system(server: Server, client: openai.OpenAI) -> None:
    video = client.videos.create(prompt="a quiet harbour", seconds="1", model="mora-osp")
    info = json.loads((server.out / video.id / "run.json").read_text())
    assert info["system"] == "osp" and info["overrides"]["image_to_video"]["backend"] == "open-sora-plan"
    assert video.model == "mora-osp"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    httpx.post(f"{server.url}/api/runs/{video.id}/cancel", headers=headers).raise_for_status()
    wait_for(lambda: client.videos.retrieve(video.id).status == "failed")
    assert client.videos.delete(video.id).deleted


def test_a_delete_during_a_webhook_delivery_removes_the_whole_run(tmp_path: Path) -> None:
    """A delivery's record may be written while the run is deleted (the client deletes a failed video at once): the
    run goes, whole, and the record is dropped rather than left in a folder half removed."""
    hub = Hub(RunOptions(out=tmp_path), Worker())
    for n in range(30):
        run_dir = tmp_path / f"run-{n}"
        run_dir.mkdir()
        (run_dir / "run.json").write_text("{}")
        for i in range(300):  # a folder that takes a while to empty
            (run_dir / f"frame-{i}.png").write_bytes(b"")
        stop = threading.Event()

        def deliver(run_dir: Path = run_dir) -> None:
            while not stop.is_set():
                record(run_dir, {"event": "evt", "attempt": 1})

        writer = threading.Thread(target=deliver)
        writer.start()
        try:
            hub.delete(run_dir.name)
        finally:
            stop.set()
            writer.join()
        assert not run_dir.exists()
    assert list(tmp_path.iterdir()) == []
