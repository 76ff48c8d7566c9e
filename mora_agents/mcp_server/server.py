"""The MCP server's tools and resources, over a server's hub (its worker, queue and runs).

Tools: `generate` (text to video), `image_to_video`, `extend`, `edit`, `connect` (each queues a run and, unless
`wait` is false, waits for it with progress notifications; cancelling the call cancels the run), `status`,
`result`, `cancel`. Resources: `mora://sops` and `mora://sops/{name}` (YAML), `mora://runs`, `mora://runs/{id}` and
`mora://runs/{id}/result.mp4`.

Media arguments are a video id (a completed video's result), a character id (`char_...`, for images), a
`data:` URL, or, where the server runs on the client's machine (stdio), a file path.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp_types import Resource

from mora_agents.errors import InputError
from mora_agents.media import VIDEO_SUFFIXES
from mora_agents.serve.hub import RUN_ID, Hub, NotFound, Snapshot
from mora_agents.serve.openai_videos import CHARACTER_ID, Characters, merged, video_object, video_request
from mora_agents.serve.sops import list_sops, read_sop
from mora_agents.serve.worker import Conflict

INSTRUCTIONS = """mora-agents makes videos with cooperating agents (text to video, image to video, extend, edit,
connect). Each tool queues a run and waits for it (progress notifications; cancel the call to cancel the run);
pass wait=false to get the video id at once and poll `status`. Videos and their results are resources under
mora://runs. Runs take minutes on a GPU with real models; the tiny preset makes noise in seconds."""


class MoraMCP(MCPServer):
    """An MCPServer whose resource list also names each SOP and each run (they change while it serves)."""

    hub: Hub

    async def list_resources(self) -> list[Resource]:
        listed = await super().list_resources()
        for sop in list_sops(self.hub.options.sops_dir) if self.hub.options.sops_dir else []:
            if sop.active:
                listed.append(Resource(uri=f"mora://sops/{sop.name}", name=f"SOP {sop.name}",
                                       description=sop.description, mime_type="application/yaml"))
        for state in self.hub.snapshots():
            listed.append(Resource(uri=f"mora://runs/{state.id}", name=f"run {state.id}",
                                   description=state.info["request"]["text"][:200], mime_type="application/json"))
            if state.result is not None:
                listed.append(Resource(uri=f"mora://runs/{state.id}/result.mp4", name=f"video {state.id}",
                                       mime_type="video/mp4"))
        return listed


@contextmanager
def _tool_errors() -> Iterator[None]:
    """Bad input, unknown ids and conflicts as the tool's error (one line)."""
    try:
        yield
    except (InputError, Conflict) as e:
        raise ToolError(str(e)) from None
    except NotFound as e:
        raise ToolError(str(e.args[0])) from None


def build_server(hub: Hub, *, local_files: bool) -> MoraMCP:
    """The MCP server over `hub`; `local_files`: media arguments may be paths on this machine (stdio only)."""
    server = MoraMCP("mora-agents", instructions=INSTRUCTIONS)
    server.hub = hub
    characters = Characters(hub.out / ".characters")

    def media(value: str, kind: str, folder: Path, name: str) -> Path:
        value = value.strip()
        if kind == "video" and RUN_ID.fullmatch(value) and (hub.out / value / "run.json").is_file():
            state = hub.snapshot(value)
            if state.result is None:
                raise Conflict(f"{name}: video {value} is {state.phase}, not completed")
            return state.result
        if kind == "image" and CHARACTER_ID.fullmatch(value):
            return characters.reference(value)
        if match := re.fullmatch(r"data:(image|video)/(\w+);base64,(.*)", value, re.DOTALL):
            suffix = {"jpeg": "jpg", "quicktime": "mov"}.get(match[2].lower(), match[2].lower())
            path = folder / f"{name}.{suffix if f'.{suffix}' in VIDEO_SUFFIXES or match[1] == 'image' else 'mp4'}"
            try:
                path.write_bytes(base64.b64decode(match[3], validate=True))
            except binascii.Error:
                raise InputError(f"{name}: the data URL is not valid base64") from None
            return path
        if local_files:
            return Path(value).expanduser()
        what = "a completed video's id" if kind == "video" else "a character id"
        raise InputError(f"{name}: {what} or a data: URL (this server does not read files of its machine)")

    async def start(ctx: Context, prompt: str, *, task: str | None, seconds: float | None = None,
                    size: str | None = None, model: str | None = None, images: dict[str, str] | None = None,
                    videos: dict[str, str] | None = None, seed: int | None = None,
                    settings: dict[str, dict[str, Any]] | None = None, wait: bool = True) -> dict[str, Any]:
        with _tool_errors(), hub.uploads() as folder:
            named = {media(v, "image", folder, k): k for k, v in (images or {}).items()}
            image_paths = list(named)
            video_paths = [path for k, v in (videos or {}).items() if (path := media(v, "video", folder, k))]
            named.update(zip(video_paths, videos or {}))
            if model is not None:
                asked = video_request(hub, model, images=len(image_paths), seconds=seconds, size=size)
                task, duration, overrides, meta = asked.task, asked.duration, asked.overrides, asked.meta
                system = asked.system
            else:
                duration = hub.duration(seconds, task) if task else None
                overrides = hub.size_overrides(size, task) if size and task else {}
                meta = {"model": task, "size": size or hub.default_size(task)}
                system = None
            overrides = merged(overrides, settings or {})
            try:
                state = await hub.create(prompt, images=image_paths, videos=video_paths, task=task,
                                         duration=duration, seed=seed, overrides=overrides, extra={"openai": meta},
                                         system=system)
            except InputError as e:  # name the argument, not the file the server made of it
                message = str(e)
                for path, name in named.items():
                    label = name if path.is_relative_to(hub.out) else f"{name} {path}"  # a file of its own
                    message = message.replace(f"--image {path}", label).replace(f"--video {path}", label)
                raise InputError(message) from None
        if not wait:
            return summary(state)
        return await follow(ctx, state)

    async def follow(ctx: Context, state: Snapshot) -> dict[str, Any]:
        sent: tuple[int, str] | None = None

        async def update(now: Snapshot) -> None:
            nonlocal sent
            if now.phase == "queued":
                message = f"queued (position {now.position})" if now.position else "queued"
            elif now.report is not None:
                message = f"{now.report.title}: step {now.report.done} of {now.report.total}"
            else:
                message = now.phase.replace("_", " ")
            if (now.progress, message) != sent:
                sent = (now.progress, message)
                await ctx.report_progress(now.progress, 100, message)

        try:
            final = await hub.follow(state.id, update)
        except asyncio.CancelledError:  # the client cancelled the call: the run stops at its next checkpoint
            with suppress(Conflict, NotFound):
                hub.cancel(state.id)
            raise
        return summary(final)

    def summary(state: Snapshot) -> dict[str, Any]:
        """The video object (as the OpenAI API's), mora's status, and where the result is."""
        result = None
        if state.result is not None:
            result = {"uri": f"mora://runs/{state.id}/result.mp4",
                      **({"path": str(state.result)} if local_files else {})}
        return {**video_object(hub, state), "mora_status": state.status, "noise": state.info.get("noise", False),
                "result": result}

    @server.tool()
    async def generate(prompt: str, ctx: Context, seconds: float | None = None, size: str | None = None,
                       model: str = "mora", seed: int | None = None, settings: dict[str, dict[str, Any]] | None = None,
                       wait: bool = True) -> dict[str, Any]:
        """Make a video from text. `model`: mora (the planner picks the task; mora-svd or mora-osp: with that
        system's models) or an SOP's name; `seconds`: its
        length (4 by default); `size`: WIDTHxHEIGHT (the models' own by default); `seed`: the same seed, the same
        video; `settings`: tool parameters as `mora run --set` takes them ({"image_to_video": {"frames": 8}});
        `wait`: false returns the video id at once."""
        return await start(ctx, prompt, task=None, seconds=seconds, size=size, model=model, seed=seed,
                           settings=settings, wait=wait)

    @server.tool()
    async def image_to_video(prompt: str, image: str, ctx: Context, seconds: float | None = None,
                             size: str | None = None, seed: int | None = None,
                             settings: dict[str, dict[str, Any]] | None = None, wait: bool = True) -> dict[str, Any]:
        """Animate an image as the text says (image_to_video). `image`: a character id, a data: URL, or (stdio) a
        file path; the other arguments as generate's."""
        return await start(ctx, prompt, task=None, seconds=seconds, size=size, model="image_to_video",
                           images={"image": image}, seed=seed, settings=settings, wait=wait)

    @server.tool()
    async def extend(video: str, ctx: Context, prompt: str = "the scene goes on", seconds: float = 4.0,
                     seed: int | None = None, settings: dict[str, dict[str, Any]] | None = None, wait: bool = True
                     ) -> dict[str, Any]:
        """Continue a video by `seconds` (extend_video). `video`: a completed video's id, a data: URL, or (stdio)
        a file path."""
        return await start(ctx, prompt, task="extend_video", seconds=seconds, videos={"video": video}, seed=seed,
                           settings=settings, wait=wait)

    @server.tool()
    async def edit(video: str, prompt: str, ctx: Context, seed: int | None = None,
                   settings: dict[str, dict[str, Any]] | None = None, wait: bool = True) -> dict[str, Any]:
        """Edit a video as the text says (edit_video: its first frame edited, then animated to its length)."""
        return await start(ctx, prompt, task="edit_video", videos={"video": video}, seed=seed, settings=settings,
                           wait=wait)

    @server.tool()
    async def connect(video_a: str, video_b: str, ctx: Context, prompt: str = "smooth transition",
                      seed: int | None = None, settings: dict[str, dict[str, Any]] | None = None, wait: bool = True
                      ) -> dict[str, Any]:
        """Join two videos with a generated transition (connect_videos)."""
        return await start(ctx, prompt, task="connect_videos", videos={"video_a": video_a, "video_b": video_b},
                           seed=seed, settings=settings, wait=wait)

    @server.tool()
    def status(video_id: str) -> dict[str, Any]:
        """A video's status, progress (0-100) and error, as the OpenAI Videos API's video object."""
        with _tool_errors():
            return summary(hub.snapshot(video_id))

    @server.tool()
    async def result(video_id: str, ctx: Context) -> dict[str, Any]:
        """Wait for a video (progress notifications) and give where its result is: a resource URI (and, over
        stdio, the file's path)."""
        with _tool_errors():
            return await follow(ctx, hub.snapshot(video_id))

    @server.tool()
    async def cancel(video_id: str) -> dict[str, Any]:  # in the event loop, as the worker's queue is
        """Take a queued video off the queue, or stop a running one at its next checkpoint (resumable)."""
        with _tool_errors():
            return {"id": video_id, "cancel": hub.cancel(video_id)}

    @server.resource("mora://sops", mime_type="application/json")
    def sops() -> str:
        """The SOPs runs use (shipped, and yours in the server's SOP folder)."""
        return json.dumps([s.model_dump() for s in list_sops(hub.options.sops_dir)]) if hub.options.sops_dir else "[]"

    @server.resource("mora://sops/{name}", mime_type="application/yaml")
    def sop(name: str) -> str:
        """One SOP's YAML."""
        try:
            return read_sop(name, hub.options.sops_dir)[1] if hub.options.sops_dir else ""
        except KeyError:
            raise ResourceError(f"no SOP named '{name}'") from None

    @server.resource("mora://runs", mime_type="application/json")
    def runs() -> str:
        """Every video (run), oldest first, as video objects."""
        return json.dumps([summary(s) for s in hub.snapshots()])

    @server.resource("mora://runs/{run_id}", mime_type="application/json")
    def run(run_id: str) -> str:
        """One video: its video object, mora's status and its result's URI."""
        try:
            return json.dumps(summary(hub.snapshot(run_id)))
        except (NotFound, InputError) as e:
            raise ResourceError(str(e.args[0])) from None

    @server.resource("mora://runs/{run_id}/result.mp4", mime_type="video/mp4")
    def run_result(run_id: str) -> bytes:
        """A completed video's MP4."""
        try:
            state = hub.snapshot(run_id)
        except (NotFound, InputError) as e:
            raise ResourceError(str(e.args[0])) from None
        if state.result is None:
            raise ResourceError(f"video {run_id} is {state.phase}, not completed")
        return state.result.read_bytes()

    return server
