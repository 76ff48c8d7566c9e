"""OpenAI's Videos API under `/v1` of `mora serve`, shaped as the official `openai` client expects it.

    POST   /v1/videos                    create: prompt, model, seconds, size, input_reference (an image file, or
                                         `input_reference[file_id]` naming a character, or a data: `image_url`)
    GET    /v1/videos                    list: after, limit, order
    GET    /v1/videos/{id}               one video: status, progress, timestamps, error
    DELETE /v1/videos/{id}               delete a completed or failed one
    GET    /v1/videos/{id}/content       variant=video (MP4), thumbnail (WebP) or spritesheet (JPEG)
    POST   /v1/videos/{id}/remix         the same request with a new prompt
    POST   /v1/videos/extensions         extend_video: prompt, seconds (added), video (a file or `video[id]`)
    POST   /v1/videos/edits              edit_video: prompt, video
    POST   /v1/videos/characters         a named reference (an image, or a video's first frame)
    GET    /v1/videos/characters/{id}    one character

A video is a run of the server (its id is the run id): the page lists it, the worker runs it in the queue's order.
`model` is `mora` (the planner picks the task; `mora-svd` and `mora-osp` with that system's models, as
`--system`), or an SOP's name (that task). Errors have OpenAI's shape,
`{"error": {"message", "type", "param", "code"}}`, and `x-should-retry: false` unless retrying can help.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import re
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import imageio_ffmpeg
import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.routing import APIRoute
from PIL import Image
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mora_agents.errors import InputError
from mora_agents.inputs import MAX_WORK_SIDE, check_attachment, check_seed, check_text, parse_sets
from mora_agents.media import atomic_path, media_kind, save_image, shrink_image
from mora_agents.runs.lock import RunLocked
from mora_agents.runs.runner import check_overrides
from mora_agents.serve.hub import BadRequest, Hub, NotFound, Snapshot, timestamp
from mora_agents.serve.uploads import UploadTooLarge, read_multipart
from mora_agents.serve.worker import Conflict

SYSTEMS: dict[str, str | None] = {"mora": None, "mora-svd": "svd", "mora-osp": "osp"}
"""Model names that are systems (the planner picks the task) rather than SOPs, and the paper's system each runs
(`RunOptions.system`; None: the server's)."""
DEFAULT_SECONDS = 4.0
"""As OpenAI's API: a request without `seconds` asks for 4 s (where the task takes a duration)."""
POLL_AFTER_MS = "500"
PREVIEWS = {"thumbnail": ("thumbnail.webp", "image/webp"), "spritesheet": ("spritesheet.jpg", "image/jpeg")}
SPRITES, SPRITE_WIDTH = 16, 256
"""A spritesheet: up to 16 frames spread over the video, each at most 256 px wide, 4 to a row."""
CHARACTER_ID = re.compile(r"char_[0-9a-f]{24}")


# -- errors -----------------------------------------------------------------------------------------

ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
               404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
               415: "invalid_request_error", 422: "invalid_request_error"}
ERROR_CODES = {401: "invalid_api_key", 404: "not_found", 409: "conflict", 413: "file_too_large",
               415: "unsupported_media_type"}


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": " ".join(message.split()), "type": ERROR_TYPES.get(status, "server_error"),
                      "param": param, "code": code or ERROR_CODES.get(status)}}


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    retry = "true" if status == 429 or status >= 500 else "false"
    return JSONResponse(error_body(status, message, param, code), status,
                        headers={"x-should-retry": retry, **(headers or {})})


def as_error(e: Exception) -> JSONResponse | None:
    """The API's answer to an exception a route raised (None: not one of ours)."""
    if isinstance(e, BadRequest):
        return error_response(400, str(e), e.param, e.code)
    if isinstance(e, UploadTooLarge):
        return error_response(413, str(e))
    if isinstance(e, InputError):
        return error_response(400, str(e))
    if isinstance(e, NotFound):
        return error_response(404, str(e.args[0]))
    if isinstance(e, Conflict | RunLocked):
        return error_response(409, str(e))
    if isinstance(e, RequestValidationError):
        first = e.errors()[0]
        return error_response(400, f"{first['loc'][-1]}: {first['msg']}", str(first["loc"][-1]))
    if isinstance(e, HTTPException):
        return error_response(e.status_code, str(e.detail))
    return None


class _Route(APIRoute):
    """A route whose errors take the API's shape."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as e:
                if (response := as_error(e)) is None:
                    raise
                return response

        return route


class ErrorShape:
    """ASGI middleware: an error answered before any /v1 route runs (a missing token, an unknown path, a wrong
    method, `{"detail": ...}` from the server's guard) takes the API's shape too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        start: Message | None = None

        async def reshape(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                if message["status"] >= 400 and headers.get(b"content-type", b"").startswith(b"application/json"):
                    start = message  # held until the body says whether it is a {"detail": ...}
                    return
            elif start is not None:
                body = message.get("body", b"")
                try:
                    detail = json.loads(body)["detail"]
                except (ValueError, KeyError, TypeError):
                    detail = None
                if detail is not None:
                    status = 400 if start["status"] == 422 else start["status"]
                    body = json.dumps(error_body(status, str(detail))).encode()
                    kept = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
                    start = {**start, "status": status, "headers": [
                        *kept, (b"content-length", str(len(body)).encode()), (b"x-should-retry", b"false")]}
                    message = {**message, "body": body}
                await send(start)
                start = None
            await send(message)

        await self.app(scope, receive, reshape)


# -- requests ---------------------------------------------------------------------------------------

@dataclass
class VideoRequest:
    """What a create asks of the runner: the task (None: the planner picks), length, sizes, and what to record."""

    task: str | None
    duration: float | None
    overrides: dict[str, dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    """Recorded in run.json under `openai`: model, size, seconds, remixed_from_video_id, character."""
    system: str | None = None
    """The paper's system the model names (`mora-osp`: osp); None: the server's."""


def video_request(hub: Hub, model: str, *, images: int = 0, seconds: str | float | None = None,
                  size: str | None = None) -> VideoRequest:
    """Map `model`, `seconds` and `size` onto a task, a duration and tool parameters; BadRequest naming the field.

    `mora` (`mora-svd`, `mora-osp`: with that system): the planner picks the task (text_to_video, or image_to_video
    with an image; checked against that one).
    An SOP name: that task, whose image inputs must match `images` and which takes no video (extensions and edits
    have routes of their own). `seconds`: the task's duration (4 when not given); `size`: `WIDTHxHEIGHT` for every
    call that has a width and height (the first frame and the clips); not given, the backends' own.
    """
    sops = hub.sops()
    if model in SYSTEMS:
        task, forced = ("image_to_video" if images else "text_to_video"), None
    elif model in sops:
        task = forced = model
        kinds = {name: spec.type for name, spec in sops[model].inputs.items()}
        wanted = sum(kind == "image" for kind in kinds.values())
        if "video" in kinds.values():
            raise BadRequest(f"model '{model}': takes a video (use POST /v1/videos/extensions or /v1/videos/edits "
                             "with an SOP of your own)", "model")
        if images != wanted:
            raise BadRequest(f"model '{model}': takes {wanted} image(s) as input_reference, got {images}",
                             "input_reference")
    else:
        raise BadRequest(f"model '{model}': unknown; models: {', '.join(SYSTEMS)} (the planner picks the task), or "
                         f"an SOP: {', '.join(sorted(sops))}", "model", "model_not_found")
    has_duration = "duration" in sops[task].inputs
    duration = hub.duration(seconds if seconds not in (None, "") else DEFAULT_SECONDS if has_duration else None, task)
    overrides = hub.size_overrides(size, task) if size else {}
    meta = {"model": model, "size": size or hub.default_size(task), "seconds": f"{duration:g}" if duration else None}
    return VideoRequest(forced, duration, overrides, meta, SYSTEMS.get(model))


def flat_fields(body: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A JSON body as the multipart fields the client would send (`video[id]` for {"video": {"id": ...}})."""
    fields = {}
    for key, value in body.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, Mapping):
            fields.update(flat_fields(value, name))
        else:
            fields[name] = value if isinstance(value, str) else json.dumps(value)
    return fields


def tool_sets(fields: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """`set[TOOL][PARAM]` fields (a mora extension: `extra_body={"set": {"image_to_video": {"frames": 8}}}`) as
    tool parameters, read and checked as `--set TOOL.PARAM=VALUE`; BadRequest (param `set`)."""
    items = [f"{m[1]}.{m[2]}={value}" for key, value in fields.items()
             if (m := re.fullmatch(r"set\[(\w+)\]\[(\w+)\]", key))]
    try:
        sets = parse_sets(items)
        check_overrides(sets)
    except InputError as e:
        raise BadRequest(str(e).replace("--set ", "set "), "set") from None
    return sets


def merged(*overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Tool parameters from several sources, later ones winning per parameter."""
    result: dict[str, dict[str, Any]] = {}
    for source in overrides:
        for tool, params in source.items():
            result.setdefault(tool, {}).update(params)
    return result


def data_url(url: str, folder: Path) -> Path:
    """A `data:image/...;base64,` URL written to a file; other URLs are refused (the server fetches nothing)."""
    match = re.fullmatch(r"data:image/(\w+);base64,(.*)", url.strip(), re.DOTALL)
    if match is None:
        raise BadRequest("input_reference.image_url: only data:image/...;base64 URLs (the server fetches nothing)",
                         "input_reference")
    try:
        data = base64.b64decode(match[2], validate=True)
    except binascii.Error:
        raise BadRequest("input_reference.image_url: not valid base64", "input_reference") from None
    path = folder / f"image_url.{match[1].lower().replace('jpeg', 'jpg')}"
    path.write_bytes(data)
    return path


# -- the objects ------------------------------------------------------------------------------------

def video_object(hub: Hub, state: Snapshot) -> dict[str, Any]:
    """A run as OpenAI's Video object (a run made on the page has model `mora`, or its forced task)."""
    info, meta = state.info, state.info.get("openai") or {}
    size, seconds = meta.get("size"), meta.get("seconds")
    if state.result is not None and (made := hub.result_artifact(state.id)) is not None:
        size, seconds = f"{made['width']}x{made['height']}", f"{made['frames'] / made['fps']:.2f}".rstrip("0").rstrip(".")
    return {
        "id": state.id, "object": "video", "model": meta.get("model") or info["request"].get("task") or "mora",
        "status": state.phase, "progress": state.progress, "prompt": info["request"]["text"],
        "created_at": timestamp(info.get("created")), "completed_at": timestamp(info.get("finished")),
        "expires_at": None, "size": size or hub.default_size(info.get("task")) or "",
        "seconds": seconds or (f"{info['request']['duration']:g}" if info["request"].get("duration") else ""),
        "remixed_from_video_id": meta.get("remixed_from_video_id"),
        "error": {"code": state.status.replace(" ", "_"), "message": state.error} if state.error else None,
    }


# -- previews ---------------------------------------------------------------------------------------

def sample_frames(path: Path, count: int) -> list[Image.Image]:
    """Up to `count` frames spread evenly over a video (the first always), decoded in one pass, none kept but
    those."""
    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        meta = next(reader)
        (width, height), total = meta["size"], max(1, round(meta.get("duration", 0) * meta.get("fps", 0)))
        wanted = sorted({round(i * (total - 1) / (count - 1)) for i in range(count)}) if count > 1 else [0]
        picked: list[Image.Image] = []
        for index, buffer in enumerate(reader):
            if index == wanted[len(picked)]:
                picked.append(Image.fromarray(np.frombuffer(buffer, np.uint8).reshape(height, width, 3)))
                if len(picked) == len(wanted):
                    break
    finally:
        reader.close()
    return picked


def write_preview(video: Path, variant: str, path: Path) -> None:
    """`thumbnail`: the first frame as WebP; `spritesheet`: frames spread over the video on a JPEG grid."""
    with atomic_path(path) as tmp:
        if variant == "thumbnail":
            sample_frames(video, 1)[0].save(tmp, "WEBP", quality=85)
            return
        frames = [shrink_image(f, SPRITE_WIDTH) for f in sample_frames(video, SPRITES)]
        columns = min(4, len(frames))
        width, height = frames[0].size
        sheet = Image.new("RGB", (columns * width, math.ceil(len(frames) / columns) * height))
        for i, frame in enumerate(frames):
            sheet.paste(frame, ((i % columns) * width, (i // columns) * height))
        sheet.save(tmp, "JPEG", quality=85)


# -- characters -------------------------------------------------------------------------------------

class Characters:
    """Named references kept under `<out>/.characters/<id>/`: `character.json` and `reference.png` (the image,
    or the first frame of the video, as an RGB PNG that fits 2048x2048)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def create(self, name: str, upload: Path) -> dict[str, Any]:
        check_text(name, "name")
        kind = media_kind(upload, f"video '{upload.name}'")
        check_attachment(upload, kind, f"video '{upload.name}'")
        character = {"id": f"char_{secrets.token_hex(12)}", "object": "character", "name": name.strip(),
                     "created_at": int(time.time()), "source": kind}
        folder = self.folder / character["id"]
        folder.mkdir(parents=True)
        try:
            image = Image.open(upload) if kind == "image" else sample_frames(upload, 1)[0]
            save_image(shrink_image(image.convert("RGB"), MAX_WORK_SIDE), folder / "reference.png")
            (folder / "character.json").write_text(json.dumps(character), encoding="utf-8")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return character

    def get(self, character_id: str) -> dict[str, Any]:
        path = self.folder / character_id / "character.json"
        if not CHARACTER_ID.fullmatch(character_id) or not path.is_file():
            raise NotFound(f"no character with id '{character_id}'")
        return json.loads(path.read_text(encoding="utf-8"))

    def reference(self, character_id: str) -> Path:
        self.get(character_id)
        return self.folder / character_id / "reference.png"


# -- the routes -------------------------------------------------------------------------------------

def videos_router(hub: Hub, max_image_bytes: int, max_video_bytes: int) -> APIRouter:
    """The /v1 routes over the hub (and so over the server's worker and queue)."""
    router = APIRouter(prefix="/v1", route_class=_Route, tags=["OpenAI Videos API"])
    characters = Characters(hub.out / ".characters")

    async def form(request: Request, folder: Path, files: dict[str, int]) -> tuple[dict[str, str], dict[str, Path]]:
        """The text fields and the files (one per field) of a multipart or JSON body."""
        kind = request.headers.get("content-type", "").partition(";")[0].strip()
        if kind == "multipart/form-data":
            fields, uploads = await read_multipart(request, folder, files)
            found: dict[str, Path] = {}
            for upload in uploads:
                if upload.kind in found:
                    raise BadRequest(f"{upload.kind}: one file only", upload.kind)
                found[upload.kind] = upload.path
            return fields, found
        if kind == "application/json":
            try:
                body = json.loads(await request.body() or b"{}")
            except ValueError as e:
                raise BadRequest(f"the JSON body does not parse ({e})") from None
            if not isinstance(body, dict):
                raise BadRequest("the JSON body is not an object")
            return flat_fields(body), {}
        raise HTTPException(415, "send multipart/form-data or application/json")

    def prompt_of(fields: Mapping[str, str]) -> str:
        try:
            return check_text(fields.get("prompt", ""), "prompt")
        except InputError as e:
            raise BadRequest(str(e), "prompt") from None

    def seed_of(fields: Mapping[str, str]) -> int | None:
        """`seed` (a mora extension, e.g. `extra_body={"seed": 7}`): the same seed, the same video."""
        if fields.get("seed") in (None, ""):
            return None
        try:
            return check_seed(int(fields["seed"]), "seed")
        except ValueError:
            raise BadRequest(f"seed '{fields['seed']}': not an integer", "seed") from None
        except InputError as e:
            raise BadRequest(str(e), "seed") from None

    def completed(video_id: str) -> Snapshot:
        state = hub.snapshot(video_id)
        if state.result is None:
            raise Conflict(f"video {video_id} is {state.phase}, not completed")
        return state

    def source_video(fields: Mapping[str, str], files: Mapping[str, Path]) -> Path:
        if "video" in files:
            return files["video"]
        if fields.get("video[id]"):
            return completed(fields["video[id]"]).result  # type: ignore[return-value]
        raise BadRequest("video: a video file, or video[id] naming a completed video", "video")

    async def create(fields: Mapping[str, str], images: list[Path], videos: list[Path], asked: VideoRequest,
                     labels: Mapping[Path, str], folder: Path) -> dict[str, Any]:
        try:
            state = await hub.create(prompt_of(fields), images=images, videos=videos, task=asked.task,
                                     duration=asked.duration, seed=seed_of(fields), overrides=asked.overrides,
                                     extra={"openai": asked.meta}, system=asked.system)
        except BadRequest:
            raise
        except InputError as e:  # name the client's field and file, not the temporary copy
            message = str(e)
            for path, label in labels.items():
                message = re.sub(rf"--(image|video) {re.escape(str(path))}", label, message)
            message = message.replace(f"{folder}/", "")
            param = next((label.split()[0] for label in labels.values() if label in message), None)
            raise BadRequest(message, param) from None
        return video_object(hub, state)

    @router.post("/videos", summary="Create a video")
    async def create_video(request: Request) -> dict[str, Any]:
        with hub.uploads() as folder:
            fields, files = await form(request, folder, {"input_reference": max_image_bytes})
            images = [files["input_reference"]] if "input_reference" in files else []
            meta: dict[str, Any] = {}
            if fields.get("input_reference[file_id]"):
                meta["character"] = fields["input_reference[file_id]"]
                images.append(characters.reference(meta["character"]))
            if fields.get("input_reference[image_url]"):
                images.append(data_url(fields["input_reference[image_url]"], folder))
            if len(images) > 1:
                raise BadRequest("input_reference: one image (a file, a character's file_id or an image_url)",
                                 "input_reference")
            asked = video_request(hub, fields.get("model") or "mora", images=len(images),
                                  seconds=fields.get("seconds"), size=fields.get("size"))
            asked.meta.update(meta)
            asked.overrides = merged(asked.overrides, tool_sets(fields))
            labels = {path: f"input_reference '{path.name}'" for path in images}
            return await create(fields, images, [], asked, labels, folder)

    @router.get("/videos", summary="List videos")
    async def list_videos(after: str | None = None, limit: int = Query(20, ge=1, le=100),
                    order: Literal["asc", "desc"] = "desc") -> dict[str, Any]:
        states = hub.snapshots()
        if order == "desc":
            states.reverse()
        ids = [s.id for s in states]
        if after is not None:
            if after not in ids:
                raise BadRequest(f"after '{after}': no such video", "after")
            states = states[ids.index(after) + 1:]
        page = [video_object(hub, s) for s in states[:limit]]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": len(states) > limit}

    @router.get("/videos/characters/{character_id}", summary="One character")
    def get_character(character_id: str) -> dict[str, Any]:
        return characters.get(character_id)

    @router.post("/videos/characters", summary="Create a character from an image or a video")
    async def create_character(request: Request) -> dict[str, Any]:
        with hub.uploads() as folder:
            fields, files = await form(request, folder, {"video": max_video_bytes})
            if "video" not in files:
                raise BadRequest("video: an image or a video file of the character", "video")
            try:
                return await asyncio.to_thread(characters.create, fields.get("name", ""), files["video"])
            except InputError as e:
                raise BadRequest(str(e), "name" if str(e).startswith("name") else "video") from None

    @router.post("/videos/extensions", summary="Extend a video (extend_video)")
    async def extend_video(request: Request) -> dict[str, Any]:
        with hub.uploads() as folder:
            fields, files = await form(request, folder, {"video": max_video_bytes})
            video = source_video(fields, files)
            if fields.get("seconds") in (None, ""):
                raise BadRequest("seconds: how many seconds to add", "seconds")
            duration = hub.duration(fields["seconds"], "extend_video")
            asked = VideoRequest("extend_video", duration, tool_sets(fields), {"model": "extend_video"})
            return await create(fields, [], [video], asked, {video: f"video '{video.name}'"}, folder)

    @router.post("/videos/edits", summary="Edit a video (edit_video)")
    async def edit_video(request: Request) -> dict[str, Any]:
        with hub.uploads() as folder:
            fields, files = await form(request, folder, {"video": max_video_bytes})
            video = source_video(fields, files)
            asked = VideoRequest("edit_video", None, tool_sets(fields),
                                 {"model": "edit_video", "size": hub.default_size("edit_video")})
            return await create(fields, [], [video], asked, {video: f"video '{video.name}'"}, folder)

    @router.get("/videos/{video_id}", summary="One video")
    async def get_video(video_id: str, response: Response) -> dict[str, Any]:  # in the loop: no thread hop
        started = time.perf_counter()
        video = video_object(hub, hub.snapshot(video_id))
        if video["status"] in ("queued", "in_progress"):
            response.headers["openai-poll-after-ms"] = POLL_AFTER_MS
        response.headers["server-timing"] = f"app;dur={1000 * (time.perf_counter() - started):.2f}"
        return video

    @router.delete("/videos/{video_id}", summary="Delete a completed or failed video")
    def delete_video(video_id: str) -> dict[str, Any]:
        hub.delete(video_id)
        return {"id": video_id, "object": "video.deleted", "deleted": True}

    @router.get("/videos/{video_id}/content", summary="The video (MP4), its thumbnail (WebP) or spritesheet (JPEG)",
                response_class=FileResponse)
    async def content(video_id: str, variant: Literal["video", "thumbnail", "spritesheet"] = "video"
                      ) -> FileResponse:
        state = completed(video_id)
        result = state.result
        assert result is not None
        if variant == "video":
            return FileResponse(result, media_type="video/mp4")
        name, media_type = PREVIEWS[variant]
        path = state.run_dir / "previews" / name
        if not path.is_file():
            await asyncio.to_thread(write_preview, result, variant, path)
        return FileResponse(path, media_type=media_type)

    @router.post("/videos/{video_id}/remix", summary="The same request with a new prompt")
    async def remix(video_id: str, request: Request) -> dict[str, Any]:
        with hub.uploads() as folder:
            fields, _ = await form(request, folder, {})
        source = completed(video_id)
        info, asked = source.info, source.info["request"]
        meta = {**(info.get("openai") or {}), "remixed_from_video_id": video_id}
        meta.setdefault("model", info.get("task") or "mora")
        run = lambda paths: [source.run_dir / p for p in paths]  # noqa: E731
        state = await hub.create(prompt_of(fields), images=run(asked["images"]), videos=run(asked["videos"]),
                                 task=info.get("task"), duration=asked.get("duration"), seed=info["seed"],
                                 overrides=merged(info["overrides"], tool_sets(fields)), extra={"openai": meta},
                                 system=info.get("system"),
                                 previous=source.run_dir / asked["previous"] if asked.get("previous") else None)
        return video_object(hub, state)

    return router
