"""`mora mcp --preset tiny` started over stdio by the MCP SDK's own client: tools, a text-to-video with progress
notifications, the result resource, a cancelled call that cancels its run, and bad input as a tool error."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from pathlib import Path

import anyio
import pytest

from mora_agents.media import read_video
from mora_agents.runs.catalog import read_info, run_status

pytest.importorskip("mcp")
from mcp import Client, StdioServerParameters  # noqa: E402

SETTINGS = {"image_to_video": {"frames": 8, "fps": 7}}


def test_mora_mcp_over_stdio(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    command = StdioServerParameters(
        command=sys.executable, args=["-m", "mora_agents", "mcp", "--preset", "tiny", "--device", "cpu", "--out",
                                      str(out), "--sops", str(tmp_path / "sops")],
        env={"OMP_NUM_THREADS": "1", "PYTHONPATH": os.environ.get("PYTHONPATH", "")})

    async def session() -> None:
        async with Client(command, read_timeout_seconds=300) as mcp:
            tools = {t.name: t for t in (await mcp.list_tools()).tools}
            assert {"generate", "image_to_video", "extend", "edit", "connect", "status", "result", "cancel"} <= set(tools)
            assert {"prompt", "seconds", "size", "model", "seed"} <= set(tools["generate"].input_schema["properties"])

            progress: list[tuple[float, float | None, str | None]] = []

            async def on_progress(done: float, total: float | None, message: str | None) -> None:
                progress.append((done, total, message))

            result = await mcp.call_tool("generate", {"prompt": "a red fox running through snow", "seconds": 1,
                                                      "size": "80x64", "seed": 3, "settings": SETTINGS},
                                         progress_callback=on_progress)
            assert not result.is_error, result.content
            video = result.structured_content
            assert (video["status"], video["mora_status"], video["size"], video["noise"]) == (
                "completed", "finished", "80x64", True)
            assert json.loads(result.content[0].text) == video
            assert progress[-1] == (100, 100, "completed") and len(progress) >= 5
            assert [p for p, _, _ in progress] == sorted(p for p, _, _ in progress)
            assert any(m and m.startswith("image_to_video (segments") for _, _, m in progress)

            # the result: as a resource (the MP4's bytes) and, over stdio, as a path on this machine
            content = (await mcp.read_resource(video["result"]["uri"])).contents[0]
            assert content.mime_type == "video/mp4"
            mp4 = tmp_path / "result.mp4"
            mp4.write_bytes(base64.b64decode(content.blob))
            assert read_video(mp4)[0].shape == (8, 64, 80, 3)
            assert Path(video["result"]["path"]) == out / video["id"] / "result.mp4"
            listed = {r.uri for r in (await mcp.list_resources()).resources}
            assert {"mora://sops/text_to_video", f"mora://runs/{video['id']}", video["result"]["uri"]} <= listed
            sop = (await mcp.read_resource("mora://sops/text_to_video")).contents[0].text
            assert sop.startswith("name: text_to_video")

            # the same video continued from its id, then a call cancelled mid-run: its run stops
            extended = await mcp.call_tool("extend", {"video": video["id"], "seconds": 1, "settings": SETTINGS,
                                                      "wait": False})
            with anyio.move_on_after(120):
                async with anyio.create_task_group() as group:
                    async def long_call() -> None:
                        await mcp.call_tool("generate", {"prompt": "a long lighthouse", "seconds": 3.4,
                                                         "settings": SETTINGS}, progress_callback=cancel_at_segments)

                    async def cancel_at_segments(done: float, total: float | None, message: str | None) -> None:
                        if message and "segments" in message:
                            group.cancel_scope.cancel()

                    group.start_soon(long_call)
            runs = (await mcp.read_resource("mora://runs")).contents[0].text
            long_id = next(r["id"] for r in json.loads(runs) if r["prompt"] == "a long lighthouse")
            for _ in range(300):
                status = (await mcp.call_tool("status", {"video_id": long_id})).structured_content
                if status["status"] == "failed":
                    break
                await asyncio.sleep(0.1)
            assert status["mora_status"] == "stopped" and status["error"]["code"] == "stopped", status
            done = (await mcp.call_tool("result", {"video_id": extended.structured_content["id"]})).structured_content
            assert done["status"] == "completed" and float(done["seconds"]) == pytest.approx(15 / 7, abs=0.01)

            bad = await mcp.call_tool("generate", {"prompt": "a fox", "size": "65x64"})
            assert bad.is_error and "size '65x64'" in bad.content[0].text
            missing = await mcp.call_tool("image_to_video", {"prompt": "x", "image": str(tmp_path / "none.png")})
            assert missing.is_error and "none.png" in missing.content[0].text
            assert (await mcp.call_tool("status", {"video_id": "nope"})).is_error

    asyncio.run(session())
    stopped = [p for p in out.iterdir() if (p / "run.json").exists() and run_status(read_info(p)) == "stopped"]
    assert len(stopped) == 1 and read_info(stopped[0])["resumable"]


def test_mora_mcp_refuses_a_bad_configuration(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mora_agents.cli import app

    for args, message in ((["--transport", "http", "--host", "0.0.0.0"], "serving beyond this machine needs --token"),
                          (["--transport", "pigeon"], "--transport pigeon: unknown"),
                          (["--preset", "huge"], "--preset huge: unknown")):
        refused = CliRunner().invoke(app, ["mcp", "--out", str(tmp_path / "runs"), "--sops", str(tmp_path / "sops"),
                                           *args], env={"MORA_TOKEN": ""})
        assert refused.exit_code == 2 and message in refused.stderr, (args, refused.output)
    assert not (tmp_path / "runs").exists()
