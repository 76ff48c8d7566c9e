"""`mora serve`: one server with an HTTP API, a queue and a page in the browser, over the runner the CLI uses.

`create_app(config)` is the FastAPI app (`mora_agents.serve.app`); `serve(config, host, port)` runs it with uvicorn.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import replace

import uvicorn

from mora_agents.errors import InputError
from mora_agents.runs.runner import check_options
from mora_agents.serve.app import ServeConfig, create_app
from mora_agents.sop.loader import BUILTIN_DIR

__all__ = ["ServeConfig", "check_config", "create_app", "is_loopback", "serve"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_config(config: ServeConfig, host: str) -> None:
    """Before serving: a host other than a loopback address needs a token, and the run options are checked as
    `mora run` checks them (else InputError). The user SOP folder is created."""
    if not is_loopback(host) and not config.token:
        raise InputError(f"--host {host}: serving beyond this machine needs --token (every request must carry it)")
    check_options(config.options)
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
    return logger


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 7860,
          on_start: Callable[[], None] | None = None) -> None:
    """Serve until interrupted (Ctrl-C: the running run is interrupted and resumes at the next start).

    The configuration is checked first (`check_config`: InputError); then `on_start` is called (e.g. to print a
    notice).
    """
    check_config(config, host)
    if on_start is not None:
        on_start()
    logger = log_to_stderr()
    app = create_app(replace(config, local_only=is_loopback(host)))
    address = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    logger.info("mora serve: the page at %s%s, the API's docs at %sdocs", address,
                "?token=TOKEN" if config.token else "", address)
    uvicorn.run(app, host=host, port=port, access_log=False, timeout_graceful_shutdown=3)
