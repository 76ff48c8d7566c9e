"""The HTTP API and the page of `mora serve`, over the runner the command line uses.

    POST /api/runs                    create a run: JSON, or multipart with a `request` JSON field and `image`/`video`
                                      files; checked like the CLI's input (prepare_run) before a run directory exists
    GET  /api/runs                    the runs under --out, oldest first
    GET  /api/runs/{id}               one run: status, queue position, plan, pending review, progress, result
    GET  /api/runs/{id}/events        its records as Server-Sent Events, from the start, `?from=SEQ` or Last-Event-ID
    GET  /api/runs/{id}/poster/{path} the first frame of a video of the run (WebP)
    DELETE /api/runs/{id}             remove a run directory that is neither queued nor running (409 otherwise)
    POST /api/runs/{id}/review        a decision for the review a run waits for (the first wins; later ones get 409)
    POST /api/runs/{id}/resume        queue an interrupted, failed, waiting or stopped run again (`?revise=storyboard`:
                                      a stopped story's storyboard is reviewed first)
    POST /api/runs/{id}/cancel        take a queued run off the queue, or stop a running one at its next checkpoint
    GET  /api/sops[/{name}], POST /api/sops/validate, PUT /api/sops/{name}   the SOP editor's files
    GET  /api/sessions/{id}, POST /api/sessions/{id}/runs                the page's conversations (`sessions`)
    /api/data..., /api/training       data folders, the data reviewer and trainings (`studio`)
    GET  /files/{id}/transcript.html  the transcript page (`mora transcript --html`)
    GET  /files/{id}/{path}           a file of the run directory (HTTP range requests, so videos seek)
    /v1/videos...                     OpenAI's Videos API over the same runs (`openai_videos`)
    /mcp                              the MCP server over the same runs, streamable HTTP (`mora_agents.mcp_server`)

FastAPI documents them at /docs (Swagger UI served from the `fastapi-offline` package: no CDN).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import re
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi_offline import FastAPIOffline
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mora_agents.errors import InputError, MoraError, describe_error, validation_summary
from mora_agents.runs.catalog import RunSummary, list_runs, read_info, run_status
from mora_agents.runs.html import transcript_html
from mora_agents.runs.lock import RunLocked
from mora_agents.runs.progress import ProgressReport
from mora_agents.runs.render import describe, record_media
from mora_agents.runs.runner import RunOptions, can_resume, prepare_run
from mora_agents.runs.transcript import Record, read_transcript
from mora_agents.serve.files import inside, poster, real_file, shown
from mora_agents.serve.hub import Hub, NotFound
from mora_agents.serve.openai_videos import ErrorShape, videos_router
from mora_agents.serve.sessions import Session, Sessions
from mora_agents.serve.sops import SopEntry, StepNode, list_sops, read_sop, save_sop, step_nodes, validate_text
from mora_agents.serve.studio import find_folders, known_adapters, shown_vote, studio_router
from mora_agents.serve.uploads import UploadTooLarge, read_multipart
from mora_agents.serve.webhooks import Sender, Webhook
from mora_agents.serve.worker import Conflict, PendingReview, Worker
from mora_agents.sop.schema import IDENTIFIER, NAME_LENGTH

STATIC = Path(__file__).parent / "static"
RUN_ID = re.compile(r"\w[\w.-]*")
MAX_SEQ = 2**63 - 1
"""The largest record number a client may name (`Last-Event-ID`, `?from=`)."""
ACTIVE = ("queued", "running", "waiting for review")
COOKIE = "mora_token"
SopName = Annotated[str, PathParam(pattern=IDENTIFIER, max_length=NAME_LENGTH, description="An SOP's `name`.")]
CSP = ("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; media-src 'self'; "
       "frame-ancestors 'self'")


@dataclass
class ServeConfig:
    options: RunOptions
    """Preset, device, memory profile, `out` (where runs go) and `sops_dir`: the user's SOP folder, where the
    editor saves (it must exist)."""
    token: str | None = None
    """Required as a bearer token (or its cookie) on every request when set."""
    local_only: bool = True
    """Bound to a loopback address: requests must name a loopback host (no DNS rebinding)."""
    max_image_bytes: int = 50 * 2**20
    max_video_bytes: int = 2 * 2**30
    webhook: Webhook | None = None
    """Where completed and failed videos are announced (signed), if anywhere."""
    data: list[Path] = field(default_factory=list)
    """Data folders, loop folders and training outputs the page shows (besides those found under `out`)."""


class RunCreate(BaseModel):
    """A request, as `mora run` takes it (files come as multipart `image`/`video` fields)."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(description="What you want, in words.")
    task: str | None = Field(None, description="Force a task (an SOP name) instead of the planner's choice.")
    duration: float | None = Field(None, description="Length in seconds (the SOP's default otherwise).")
    seed: int | None = Field(None, description="Base seed (random if not given; always recorded).")
    review: bool = Field(False, description="Wait at the SOP's review points for a decision (POST .../review).")
    max_repeats: int = Field(3, ge=0, description="Repeats (and edits) allowed per reviewed step.")
    previous: str | None = Field(None, description="A run id: its result is what the request refers to ('extend it').")
    set: dict[str, dict[str, Any]] = Field({}, description='Tool parameters: {"image_to_video": {"motion_bucket_id": 127}}.')
    candidates: int = Field(1, description="Best of N for the SOP's best_of steps (a story's keyframes and clips).")
    adapters: str | None = Field(None, description="Fine-tuned agents for this run: the path of adapters that GET "
                                 "/api/training lists (the server's --adapters otherwise).")


class SessionRun(BaseModel):
    run: str = Field(description="A run id.")


class ReviewAnswer(BaseModel):
    review: int = Field(description="The `seq` of the review request answered (the run's `review.seq`).")
    decision: Literal["next", "repeat", "edit", "stop"]
    text: str | None = Field(None, description="For edit: the new text of what the step's `edit` names.")


class SopText(BaseModel):
    yaml: str


class SopCheck(BaseModel):
    valid: bool
    name: str | None = None
    error: str | None = None
    """What is wrong, naming the step and the field."""
    steps: list[StepNode] = []
    """When valid: the steps for the editor's diagram."""


class Review(BaseModel):
    seq: int
    step: str
    options: list[str]
    edit: str | None
    text: str | None
    """The current value of what an edit rewrites."""
    output: dict[str, Any] | str
    repeats_left: int
    format: str | None = None
    """`storyboard`: `text` is the storyboard as YAML; an edit is a whole one or edit commands."""
    candidates: list[dict[str, Any]] = []
    """At a best-of pick: the candidates (media with their URL); an edit (`pick N`) keeps candidate N."""
    details: dict[str, Any] = {}
    """At a best-of pick: the judges' votes (each with `labels`: the labels it was shown -> candidates, as the data
    reviewer's), reasons and points, and the candidate they chose."""


class RunView(BaseModel):
    id: str
    status: str
    """queued, running, waiting for review, finished, failed, stopped, interrupted, or damaged (`error` says why)."""
    position: int | None
    """In the queue: 1 runs next; None when not queued."""
    resumable: bool
    request: dict[str, Any]
    task: str | None
    plan: dict[str, Any] | None
    review: Review | None
    """The review the run waits for, while it runs in this server (answer it with POST .../review)."""
    progress: ProgressReport | None
    result: str | None
    """URL of result.mp4 once finished."""
    poster: str | None
    """URL of the result's first frame (WebP)."""
    adapters: str | None
    noise: bool
    seconds: float
    created: str | None
    started: str | None
    finished: str | None
    error: str | None
    transcript: str
    storyboard: dict[str, Any] | None = None
    """A story's storyboard as it stands (title, characters, settings, shots)."""
    revisable: bool = False
    """A story stopped on request between steps: a resume may revise its storyboard first (POST
    .../resume?revise=storyboard), keeping the shots the edit does not change."""
    story: dict[str, Any] | None = None
    """A finished story's measures (run.json's `story`)."""


def _one_line(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": " ".join(message.split())}, status_code=status)


def is_loopback(host: str | None) -> bool:
    """Whether a host name or address is this machine's loopback: `localhost`, 127.0.0.0/8 or ::1."""
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def address(url: str) -> tuple[str | None, int | None] | None:
    """The host name (lower case) and port of a URL or `//host:port`; None when it is not one (a bad port, an
    unclosed `[`)."""
    try:
        parts = urlsplit(url)
        return parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:
        return None


def _media(artifact: dict[str, Any], run_id: str) -> dict[str, Any]:
    path = artifact["path"]
    return {**artifact, "url": None if Path(path).is_absolute() else f"/files/{run_id}/{quote(path)}"}


def _review(pending: PendingReview, run_id: str) -> Review:
    request = pending.request
    output = request.output if isinstance(request.output, str) else _media(request.output.model_dump(), run_id)
    return Review(seq=pending.seq, step=request.key, options=request.options, edit=request.edit, text=request.text,
                  output=output, repeats_left=request.repeats_left, format=request.format,
                  candidates=[_media(c.model_dump(), run_id) for c in request.candidates],
                  details={**request.details, "votes": [shown_vote(v) for v in request.details["votes"]]}
                  if "votes" in request.details else request.details)


def record_event(record: Record, run_id: str) -> dict[str, Any]:
    """A record as the page shows it: the record, its one-line text and its media with URLs."""
    return {**record.model_dump(), "text": describe(record),
            "media": [_media(a, run_id) for a in record_media(record)]}


def sse(event: str, data: Any, event_id: int | None = None) -> str:
    return (f"id: {event_id}\n" if event_id is not None else "") + f"event: {event}\ndata: {json.dumps(data)}\n\n"


class Guard:
    """Checks every request: the bearer token when one is set (header, cookie, or `?token=`, which sets the cookie
    and redirects), a loopback Host when bound to loopback (no DNS rebinding), no cross-origin writes (no CSRF).
    Responses outside the OpenAPI pages get a content security policy (no inline scripts)."""

    def __init__(self, app: ASGIApp, token: str | None, local_only: bool) -> None:
        self.app, self.token, self.local_only = app, token, local_only

    def _refusal(self, request: Request) -> JSONResponse | None:
        host = request.headers.get("host", "")
        served = address(f"{request.scope.get('scheme', 'http')}://{host}")
        if served is None:
            return _one_line(400, f"host '{shown(host)}': not a host name")
        if self.local_only and not is_loopback(served[0]):
            return _one_line(400, f"host '{shown(host)}': this server answers only to localhost and loopback addresses")
        origin = request.headers.get("origin")
        if request.method not in ("GET", "HEAD", "OPTIONS") and origin and address(origin) != served:
            return _one_line(403, f"origin '{shown(origin)}': cross-origin requests are refused")
        if self.token is None:
            return None
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        given = (bearer if scheme.lower() == "bearer" else "", request.cookies.get(COOKIE, ""),
                 request.query_params.get("token", ""))
        if any(g and hmac.compare_digest(g.encode(), self.token.encode()) for g in given):
            return None
        return JSONResponse({"detail": "a token is required: 'Authorization: Bearer TOKEN', or open the page once "
                                       "with ?token=TOKEN"}, 401, headers={"WWW-Authenticate": "Bearer"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        if (refusal := self._refusal(request)) is not None:
            return await refusal(scope, receive, send)
        if self.token is not None and "token" in request.query_params:  # keep it in a cookie, out of the address
            url = request.url.remove_query_params("token")
            response = RedirectResponse(url.path + (f"?{url.query}" if url.query else ""), 303)
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
            return await response(scope, receive, send)
        docs = scope["path"].startswith(("/docs", "/redoc", "/openapi.json"))

        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start" and not docs:
                message["headers"] = [*message.get("headers", []), (b"content-security-policy", CSP.encode())]
            await send(message)

        await self.app(scope, receive, send_with_policy)


def create_app(config: ServeConfig) -> FastAPI:
    """The server: a FastAPI app whose lifespan runs the worker (and queues again what a stopped server left)."""
    options = replace(config.options, out=config.options.out.resolve())
    out, user_sops = options.out, options.sops_dir
    assert user_sops is not None, "the server needs a user SOP folder"
    worker = Worker()
    hub = Hub(options, worker)
    try:
        from mora_agents.mcp_server import http_routes
    except ImportError:  # the `mcp` extra is not installed: no /mcp
        mcp_routes, mcp_sessions = [], None
    else:
        mcp_routes, mcp_sessions = http_routes(hub)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if config.webhook is not None:  # closed after the worker stops
                sender = Sender(config.webhook)
                hub.on_end.append(sender.send)
                stack.push_async_callback(sender.close)
            await stack.enter_async_context(worker.running(out))
            if mcp_sessions is not None:
                await stack.enter_async_context(mcp_sessions())
            yield

    app = FastAPIOffline(title="mora serve", lifespan=lifespan, static_url="/docs/assets",
                         description="Runs, review, SOPs and transcripts of mora-agents over HTTP; the page is at /.")
    app.add_middleware(Guard, token=config.token, local_only=config.local_only)
    app.add_middleware(ErrorShape)  # outside the guard: its refusals of /v1 requests take the API's shape
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(videos_router(hub, config.max_image_bytes, config.max_video_bytes))
    app.include_router(studio_router(config.data, out))
    sessions = Sessions(out)
    app.router.routes.extend(mcp_routes)

    @app.exception_handler(InputError)
    async def input_error(request: Request, e: InputError) -> JSONResponse:
        return _one_line(413 if isinstance(e, UploadTooLarge) else 400, str(e))

    @app.exception_handler(Conflict)
    @app.exception_handler(RunLocked)
    async def conflict(request: Request, e: Conflict | RunLocked) -> JSONResponse:
        return _one_line(409, str(e))

    @app.exception_handler(ClientDisconnect)
    async def cut_short(request: Request, e: ClientDisconnect) -> JSONResponse:
        return _one_line(400, f"the request's body ended before its Content-Length "
                              f"({shown(request.headers.get('content-length', ''))} bytes)")

    @app.exception_handler(MoraError)
    async def failed(request: Request, e: MoraError) -> JSONResponse:  # a full disk, say
        return _one_line(500, str(e))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception) -> JSONResponse:  # still logged with its traceback
        return _one_line(500, f"internal error: {describe_error(e)}")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        return _one_line(422, "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()))

    def run_path(run_id: str) -> Path:
        """The run directory `run_id` in --out: a folder there with its run.json, neither of them a link."""
        if not RUN_ID.fullmatch(run_id) or real_file(out / run_id / "run.json") != out / run_id / "run.json":
            raise HTTPException(404, f"run {shown(run_id)}: no such run")
        return out / run_id

    def adapters(asked: str | None) -> Path | None:
        """The adapters a request names: one of the trainings the page lists (400 otherwise), or the server's."""
        if asked is None:
            return options.adapters
        known = known_adapters(find_folders(config.data, out))
        path = Path(asked)
        if not path.is_absolute() or path not in known:
            raise InputError(f"adapters '{shown(asked)}': not one of the trainings this server shows "
                             "(GET /api/training lists them)")
        return path

    def view(run_dir: Path) -> RunView:
        info, run_id = read_info(run_dir), run_dir.name
        live = worker.live.get(run_id)
        position = worker.position(run_id)
        pending = live.review if live is not None else None
        plan, result = run_dir / "plan.json", run_dir / "result.mp4"
        return RunView(
            id=run_id, status="queued" if position else run_status(info), position=position,
            resumable=live is None and can_resume(info), request=info["request"], task=info.get("task"),
            plan=json.loads(plan.read_text(encoding="utf-8")) if plan.is_file() else None,
            review=None if pending is None else _review(pending, run_id),
            progress=live.progress if live is not None else None,
            result=f"/files/{run_id}/result.mp4" if result.is_file() else None,
            poster=f"/api/runs/{run_id}/poster/result.mp4" if result.is_file() else None,
            adapters=str(info["adapters"]) if info.get("adapters") else None, noise=info.get("noise", False),
            seconds=float(info.get("seconds") or 0.0), created=info.get("created"), started=info.get("started"),
            finished=info.get("finished"), error=info.get("error"), transcript=f"/files/{run_id}/transcript.html",
            storyboard=info.get("storyboard"), story=info.get("story"),
            revisable=live is None and bool(info.get("storyboard")) and run_status(info) == "stopped"
            and can_resume(info) and not info.get("pending_review"))

    def damaged(summary: RunSummary) -> RunView:
        """A run directory whose run.json cannot be read: listed with the reason, nothing else."""
        return RunView(id=summary.path.name, status="damaged", position=None, resumable=False, request={"text": ""},
                       task=None, plan=None, review=None, progress=None, result=None, poster=None, adapters=None, noise=False, seconds=0.0,
                       created=None, started=None, finished=None, error=summary.problem,
                       transcript=f"/files/{summary.path.name}/transcript.html")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/info", summary="The server's settings")
    def server_info() -> dict[str, Any]:
        return {"preset": options.preset, "device": options.device, "noise": options.preset == "tiny",
                "adapters": str(options.adapters) if options.adapters else None,
                "out": str(out), "sops": str(user_sops), "max_image_bytes": config.max_image_bytes,
                "max_video_bytes": config.max_video_bytes}

    @app.post("/api/runs", status_code=201, response_model=RunView, summary="Create a run", openapi_extra={
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": RunCreate.model_json_schema()},
            "multipart/form-data": {"schema": {"type": "object", "required": ["request"], "properties": {
                "request": {"type": "string", "description": "the RunCreate JSON"},
                "image": {"type": "array", "items": {"type": "string", "format": "binary"}},
                "video": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}})
    async def create_run(request: Request) -> RunView:
        """Check the request like `mora run` does and queue it: the run id and its directory exist at once.

        Uploads over the size limits get 413; bad input (corrupt or wrong-kind files, unknown task, ...) 400; either
        way no run directory is made.
        """
        kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()  # case-insensitive
        if kind not in ("application/json", "multipart/form-data"):
            raise HTTPException(415, "send application/json or multipart/form-data")
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".upload-", dir=out) as folder:
            files: dict[str, list[Path]] = {"image": [], "video": []}
            if kind == "multipart/form-data":
                limits = {"image": config.max_image_bytes, "video": config.max_video_bytes}
                fields, uploads = await read_multipart(request, Path(folder), limits)
                for upload in uploads:
                    files[upload.kind].append(upload.path)
                body = fields.get("request", "")
            else:
                body = (await request.body()).decode("utf-8", "replace")
            try:
                asked = RunCreate.model_validate_json(body or "{}")
            except ValidationError as e:
                raise InputError(f"request: {validation_summary(e)}") from None
            previous = None
            if asked.previous is not None:
                previous = run_path(asked.previous) / "result.mp4"
                if not previous.is_file():
                    raise InputError(f"previous: run {asked.previous} has no result")
            run_options = replace(options, seed=asked.seed, overrides=asked.set, max_repeats=asked.max_repeats,
                                  review=asked.review, adapters=adapters(asked.adapters), candidates=asked.candidates)
            try:
                # decoding and copying the inputs takes a while for a long video: off the event loop, which serves
                # the other clients and the event streams meanwhile
                run_dir = await asyncio.to_thread(
                    prepare_run, asked.text, images=files["image"], videos=files["video"], task=asked.task,
                    duration=asked.duration, previous=previous, options=run_options)
            except InputError as e:  # name the client's file, not the temporary one
                raise InputError(re.sub(re.escape(folder) + r"/\d+/", "", str(e))) from None
        worker.submit(run_dir)
        return view(run_dir)

    @app.get("/api/runs", summary="List runs (oldest first)")
    def runs() -> list[RunView]:
        return [view(s.path) if s.problem is None else damaged(s) for s in list_runs(out, links=False)]

    @app.get("/api/runs/{run_id}", summary="One run")
    def run(run_id: str) -> RunView:
        return view(run_path(run_id))

    @app.get("/api/runs/{run_id}/events", summary="Stream a run's records (Server-Sent Events)",
             response_class=StreamingResponse)
    async def events(run_id: str, start: int = Query(0, alias="from", ge=0, le=MAX_SEQ),
                     last_event_id: int | None = Header(None, ge=0, le=MAX_SEQ)) -> StreamingResponse:
        """Events: `record` (id: its seq; the record, its `text` and its `media` with URLs), `status` (the run's
        view without the plan), `progress` (the working step, or null) and `end` once the run is no longer queued
        or running. The transcript file is the source: reconnecting with Last-Event-ID (or `?from=`) misses
        nothing."""
        run_dir = run_path(run_id)
        return StreamingResponse(stream(run_dir, start if last_event_id is None else last_event_id + 1),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    async def stream(run_dir: Path, next_seq: int) -> AsyncIterator[str]:
        run_id, sent_status, sent_progress, quiet = run_dir.name, None, None, 0
        transcript = run_dir / "transcript.jsonl"
        while True:
            changed = worker.signal(run_id)
            state = view(run_dir)  # before the records: all records of a finished run are in the file by then
            chunks = []
            for record in read_transcript(transcript) if transcript.is_file() else []:
                if record.seq >= next_seq:
                    chunks.append(sse("record", record_event(record, run_id), record.seq))
                    next_seq = record.seq + 1
            status = state.model_dump(mode="json", exclude={"plan", "progress"})
            if status != sent_status:
                chunks.append(sse("status", status))
                sent_status = status
            progress = state.progress.model_dump() if state.progress else None
            if progress != sent_progress:
                chunks.append(sse("progress", progress))
                sent_progress = progress
            if state.status not in ACTIVE and run_id not in worker.live:
                yield "".join(chunks) + sse("end", status)
                return
            quiet = 0 if chunks else quiet + 1
            if chunks or quiet % 15 == 0:
                yield "".join(chunks) or ": keep-alive\n\n"
            with suppress(TimeoutError):  # runs driven by another process only show in the file
                await asyncio.wait_for(changed.wait(), timeout=1.0)

    @app.post("/api/runs/{run_id}/review", summary="Decide a review point")
    async def review(run_id: str, answer: ReviewAnswer) -> dict[str, Any]:  # in the loop: it wakes the worker
        """The first decision for a review wins; a second one (another tab, another client) gets 409."""
        run_path(run_id)
        try:
            decision = worker.decide(run_id, answer.review, f"{answer.decision} {answer.text or ''}")
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        return decision.model_dump()

    @app.post("/api/runs/{run_id}/resume", summary="Queue an interrupted, failed, waiting or stopped run again")
    async def resume(run_id: str, revise: Literal["storyboard"] | None = Query(
            None, description="Revise the storyboard first (`mora resume RUN --revise storyboard`): the run waits "
                              "for its review (POST .../review) before it goes on, keeping what the edit does not "
                              "change; for a run that is `revisable`.")) -> RunView:  # in the event loop, as the
        run_dir = run_path(run_id)                                                     # worker's queue is
        current = view(run_dir)
        if not current.resumable:
            raise Conflict(f"run {run_id} is {current.status}: only interrupted, failed, waiting and stopped runs "
                           "resume")
        if revise is not None and not current.revisable:
            raise Conflict(f"run {run_id}: only a story stopped on request between steps (not at a review) can "
                           "revise its storyboard")
        worker.submit(run_dir, revise=revise)
        return view(run_dir)

    @app.post("/api/runs/{run_id}/cancel", summary="Cancel a queued run, or stop a running one at its next checkpoint")
    async def cancel(run_id: str) -> dict[str, str]:  # in the event loop, as the worker's queue is
        run_path(run_id)
        return {"id": run_id, "cancel": worker.cancel(run_id)}

    @app.delete("/api/runs/{run_id}", summary="Delete a run that is neither queued nor running")
    def delete(run_id: str) -> dict[str, Any]:
        """Remove the run directory; 409 while the run is queued or running (here or in another process)."""
        run_path(run_id)
        try:
            hub.delete(run_id)
        except NotFound:  # deleted meanwhile
            raise HTTPException(404, f"run {shown(run_id)}: no such run") from None
        return {"id": run_id, "deleted": True}

    @app.get("/api/runs/{run_id}/poster/{path:path}", summary="The first frame of a video of the run (WebP)",
             response_class=FileResponse)
    async def run_poster(run_id: str, path: str) -> FileResponse:
        run_dir = run_path(run_id)
        return FileResponse(await asyncio.to_thread(poster, run_dir, path), media_type="image/webp")

    @app.get("/api/sessions/{session_id}", summary="A conversation of the page: its runs")
    def session(session_id: str) -> Session:
        return sessions.get(session_id)

    @app.post("/api/sessions/{session_id}/runs", summary="Add a run to a conversation")
    def session_add(session_id: str, run: SessionRun) -> Session:
        run_path(run.run)
        return sessions.add(session_id, run.run)

    @app.get("/api/sops", summary="List shipped and user SOPs")
    def sops() -> list[SopEntry]:
        return list_sops(user_sops)

    @app.get("/api/sops/{name}", summary="One SOP: its entry and YAML text")
    def sop(name: SopName, origin: Literal["shipped", "user"] | None = None) -> dict[str, Any]:
        try:
            entry, text = read_sop(name, user_sops, origin)
        except KeyError:
            raise HTTPException(404, f"SOP {name}: not found") from None
        return {**entry.model_dump(), "yaml": text}

    @app.post("/api/sops/validate", summary="Validate SOP text")
    def validate(sop: SopText) -> SopCheck:
        try:
            checked = validate_text(sop.yaml)
            return SopCheck(valid=True, name=checked.name, steps=step_nodes(checked))
        except InputError as e:
            return SopCheck(valid=False, error=str(e))

    @app.put("/api/sops/{name}", summary="Save an SOP into the user SOP folder (validated first)")
    def save(name: SopName, sop: SopText) -> dict[str, str]:
        return {"name": name, "file": str(save_sop(name, sop.yaml, user_sops))}

    @app.get("/files/{run_id}/transcript.html", response_class=HTMLResponse, summary="A run's transcript page")
    def transcript(run_id: str) -> HTMLResponse:
        run_dir = run_path(run_id)
        if not (run_dir / "transcript.jsonl").is_file():
            raise HTTPException(404, f"run {run_id}: no transcript yet")
        return HTMLResponse(transcript_html(run_dir))

    @app.get("/files/{run_id}/{path:path}", summary="A file of a run directory (HTTP range requests)")
    def run_files(run_id: str, path: str) -> FileResponse:
        return FileResponse(inside(run_path(run_id), path))

    return app
