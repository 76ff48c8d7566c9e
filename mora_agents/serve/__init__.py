"""`mora serve`: one server with an HTTP API, a queue and a page in the browser, over the runner the CLI uses.

`create_app(config)` is the FastAPI app (`mora_agents.serve.app`); `serve(config, host, port)` runs it with uvicorn.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import replace

import uvicorn

from mora_agents.errors import InputError, MoraError
from mora_agents.runs.runner import check_options
from mora_agents.serve.app import ServeConfig, create_app, is_loopback
from mora_agents.serve.studio import folder_kind
from mora_agents.sop.loader import BUILTIN_DIR

__all__ = ["ServeConfig", "bind", "check_config", "create_app", "is_loopback", "serve"]


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to `host`:`port` (0: a free port), not yet listening; InputError when the port is out of range,
    the host is no address of this machine, or the port is taken."""
    if not 0 <= port <= 65535:
        raise InputError(f"--port {port}: not a port (0 to 65535)")
    try:  # IPv4 unless the host is an IPv6 address, as uvicorn binds
        family, kind, proto, _, where = socket.getaddrinfo(
            host, port, socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise InputError(f"--host {host}: not an address or a known host name ({e.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart need not wait for TIME_WAIT
    try:
        sock.bind(where)
    except OSError as e:
        sock.close()
        raise InputError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})") from None
    return sock


def check_config(config: ServeConfig, host: str) -> None:
    """Before serving: a host other than a loopback address needs a token, and the run options are checked as
    `mora run` checks them (else InputError), as are the --data folders. The user SOP folder is created."""
    if not is_loopback(host) and not config.token:
        raise InputError(f"--host {host}: serving beyond this machine needs --token (every request must carry it)")
    check_options(config.options)
    for folder in config.data:
        if folder_kind(folder) is None:
            raise InputError(f"--data {folder}: not a data folder (sets.json), a loop folder (loop.json) or a "
                             "`mora train` output (card.json)")
    assert config.options.sops_dir is not None
    if config.options.sops_dir.resolve() == BUILTIN_DIR.resolve():
        raise InputError(f"--sops {config.options.sops_dir}: the shipped SOPs' folder; the page saves SOPs into "
                         "--sops, so give a folder of your own")
    try:
        config.options.sops_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"--sops {config.options.sops_dir}: cannot make the folder ({e.strerror})") from None


def log_to_stderr() -> logging.Logger:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    logger = logging.getLogger("mora.serve")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the MCP SDK gives the root logger a handler of its own: each line would print twice
    return logger


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 7860,
          on_start: Callable[[], None] | None = None) -> None:
    """Serve until interrupted (Ctrl-C: the running run is interrupted and resumes at the next start).

    The port is taken first (`bind`), then the configuration is checked (`check_config`), else InputError with
    nothing made; then `on_start` is called (e.g. to print a notice). MoraError if the app then fails to start.
    """
    sock = bind(host, port)
    try:
        check_config(config, host)
    except InputError:
        sock.close()
        raise
    if on_start is not None:
        on_start()
    logger = log_to_stderr()
    app = create_app(replace(config, local_only=is_loopback(host)))
    port = sock.getsockname()[1]
    address = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    logger.info("mora serve: the page at %s%s, the API's docs at %sdocs", address,
                "?token=TOKEN" if config.token else "", address)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, access_log=False, timeout_graceful_shutdown=3))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # a second Ctrl-C during the shutdown
        pass
    finally:
        sock.close()
    if not server.started:
        raise MoraError("the server did not start (its log above says why)")
