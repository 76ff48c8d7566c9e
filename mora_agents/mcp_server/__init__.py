"""`mora mcp`: mora-agents as a Model Context Protocol server (the official `mcp` SDK), over stdio or streamable
HTTP; `mora serve` also serves it at /mcp, over the same worker and queue as its page and API.

The tools and resources are in `mora_agents.mcp_server.server`; this module runs them. (The package is not named
`mcp`, which would shadow the SDK.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace

import anyio
import uvicorn
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from mora_agents.mcp_server.server import build_server
from mora_agents.serve import ServeConfig, check_config, is_loopback, log_to_stderr
from mora_agents.serve.app import Guard
from mora_agents.serve.hub import Hub
from mora_agents.serve.worker import Worker

__all__ = ["build_server", "http_routes", "serve_mcp"]


def http_routes(hub: Hub) -> tuple[list[BaseRoute], Callable[[], AbstractAsyncContextManager[None]]]:
    """The streamable HTTP endpoint `/mcp` over `hub`, and the context that runs its sessions (enter it in the
    app's lifespan). Host and token checks are the server's (`Guard`), not the SDK's."""
    server = build_server(hub, local_files=False)
    app = server.streamable_http_app(
        streamable_http_path="/mcp", transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
    return list(app.routes), server.session_manager.run


def serve_mcp(config: ServeConfig, transport: str = "stdio", host: str = "127.0.0.1", port: int = 7861) -> None:
    """Serve the MCP server until stopped: over stdin/stdout (media arguments may be this machine's files), or
    over streamable HTTP at http://HOST:PORT/mcp with `mora serve`'s host and token rules. InputError first if the
    configuration is bad (as `mora serve`'s)."""
    check_config(config, host)
    options = replace(config.options, out=config.options.out.resolve())
    worker = Worker()
    hub = Hub(options, worker)
    log_to_stderr()
    if transport == "stdio":
        async def stdio() -> None:
            async with worker.running(options.out):
                await build_server(hub, local_files=True).run_stdio_async()

        anyio.run(stdio)
        return
    routes, sessions = http_routes(hub)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with worker.running(options.out), sessions():
            yield

    app = Guard(Starlette(routes=routes, lifespan=lifespan), config.token, local_only=is_loopback(host))
    uvicorn.run(app, host=host, port=port, access_log=False, timeout_graceful_shutdown=3)
