"""The page's conversations, kept on the server: a session is the list of runs a chat made, in order.

`<out>/.sessions/<id>.json` holds `{"runs": [...]}`; the page keeps its session id in the browser (localStorage), so
that a reload or a second tab shows the same chat. A follow-up refers to the session's last finished result.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

from pydantic import BaseModel

from mora_agents.errors import InputError
from mora_agents.media import atomic_path

SESSION_ID = r"[A-Za-z0-9_-]{8,64}"
FOLDER = ".sessions"


class Session(BaseModel):
    id: str
    runs: list[str] = []
    """Run ids, oldest first (runs deleted since are left out)."""
    previous: str | None = None
    """The last run of the session with a result: what a follow-up refers to ('extend it')."""


class Sessions:
    """The sessions under `<out>/.sessions/`; every change is written atomically."""

    def __init__(self, out: Path) -> None:
        self.out, self.folder = out, out / FOLDER
        self._writing = threading.Lock()  # the routes run in threads: two tabs adding at once lose nothing

    def _path(self, session_id: str) -> Path:
        if not re.fullmatch(SESSION_ID, session_id):
            raise InputError(f"session '{session_id[:100]}': not a session id (8 to 64 letters, digits, - or _)")
        return self.folder / f"{session_id}.json"

    def _runs(self, session_id: str) -> list[str]:
        path = self._path(session_id)
        try:
            runs = json.loads(path.read_bytes())["runs"] if path.is_file() else []
        except (OSError, ValueError, KeyError, TypeError):  # a damaged file: the chat starts afresh
            return []
        return [r for r in runs if isinstance(r, str) and (self.out / r / "run.json").is_file()]

    def get(self, session_id: str) -> Session:
        runs = self._runs(session_id)
        previous = next((r for r in reversed(runs) if (self.out / r / "result.mp4").is_file()), None)
        return Session(id=session_id, runs=runs, previous=previous)

    def add(self, session_id: str, run_id: str) -> Session:
        """Add a run at the end of the session (once)."""
        with self._writing:
            runs = self._runs(session_id)
            if run_id not in runs:
                with atomic_path(self._path(session_id)) as tmp:
                    tmp.write_text(json.dumps({"runs": [*runs, run_id]}) + "\n", encoding="utf-8")
        return self.get(session_id)
