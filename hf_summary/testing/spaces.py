"""Spaces on the local Hub: the settings huggingface_hub sets and reads, and a Docker Space's command run as the Hub
would run it, without a container.

Where each fact comes from (huggingface_hub installed in the project's venv, `hf_api.py` and `_space_api.py`):

- `create_repo(repo_type="space", space_sdk=...)` POSTs `/api/repos/create` with `"sdk"` (the client refuses to
  send a Space without one, hf_api.py:4722-4730) and, when given, `"hardware"`, `"sleepTimeSeconds"`, `"secrets"` and
  `"variables"` as lists of `{key, value, description?}` (hf_api.py:4737-4748). A 409 is what `exist_ok=True`
  swallows (hf_api.py:4779).
- `add_space_secret` POSTs `/api/spaces/{id}/secrets` `{key, value, description?}`; `delete_space_secret` sends
  DELETE there with `{key}`; `get_space_secrets` GETs `{key: {description, updatedAt}}`: "Secret values are
  write-only and cannot be read back" (hf_api.py:8066-8166).
- `add_space_variable` / `delete_space_variable` / `get_space_variables`: the same at `/api/spaces/{id}/variables`,
  each answering every variable as `{key: {value, description, updatedAt}}` (hf_api.py:8169-8260, `SpaceVariable`
  in _space_api.py:300).
- `get_space_runtime` GETs `/api/spaces/{id}/runtime`; `SpaceRuntime` reads `stage`, `hardware.current`,
  `hardware.requested`, `gcTimeout`, `storage`, `devMode` (hf_api.py:8262-8278, _space_api.py:237-248).
- `repo_info` of a Space: `SpaceInfo` reads `sdk` and `runtime` (hf_api.py:1248 and below).

A Docker Space (Hub docs, "Docker Spaces"): its README's front matter says `sdk: docker` and the `app_port` its app
listens on (7860 by default); the image is built from its `Dockerfile` and runs its `CMD`. Variables and secrets
reach the app as environment variables. `run_space` runs that `CMD` in a folder holding the Space's files, with
those variables and secrets, and `PORT` set to a free port: without a container there is no port mapping, so the
app must read `PORT` (the Dockerfile sets `ENV PORT=<app_port>` for the Hub). The Dockerfile's other `ENV` lines are
not applied: they name paths inside the image.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import BadRequest
from .storage import utc_now

SDKS = ("gradio", "docker", "static", "streamlit")  # huggingface_hub's constants.SPACES_SDK_TYPES
DEFAULT_APP_PORT = 7860
STOP_TIMEOUT = 10.0  # seconds a stopped Space's command has to exit after SIGTERM before it is killed


class SpaceStore:
    """Each Space's SDK, secrets and variables (kept as JSON under `root/spaces`), and the runtime stage of the
    Spaces running now (in memory: a restarted server runs none)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root) / "spaces"
        self._lock = threading.Lock()
        self._stages: dict[str, dict[str, Any]] = {}

    def _path(self, space_id: str) -> Path:
        return self.root / f"{space_id}.json"

    def settings(self, space_id: str) -> dict[str, Any]:
        """`{"sdk", "secrets": {key: {value, description, updatedAt}}, "variables": {...}}`; empty ones if unknown."""
        try:
            data: dict[str, Any] = json.loads(self._path(space_id).read_text())
        except FileNotFoundError:
            data = {}
        return {"sdk": data.get("sdk"), "secrets": data.get("secrets", {}), "variables": data.get("variables", {})}

    def create(self, space_id: str, settings: dict[str, Any]) -> None:
        """Record a new Space's settings (see `settings_from_body`)."""
        with self._lock:
            self._write(space_id, settings)

    def set(self, space_id: str, kind: str, item: Any) -> dict[str, Any]:
        """Add or update a secret or variable; return them all."""
        with self._lock:
            settings = self.settings(space_id)
            settings[kind][_key(item)] = _entry(item)
            self._write(space_id, settings)
            return dict(settings[kind])

    def remove(self, space_id: str, kind: str, item: Any) -> dict[str, Any]:
        """Delete a secret or variable (no error if absent); return those left."""
        with self._lock:
            settings = self.settings(space_id)
            settings[kind].pop(_key(item, value=False), None)
            self._write(space_id, settings)
            return dict(settings[kind])

    def forget(self, space_id: str) -> None:
        """Drop a deleted Space's settings: a Space created again with its name starts without them."""
        self._path(space_id).unlink(missing_ok=True)

    def runtime(self, space_id: str, has_app: bool) -> dict[str, Any]:
        """The runtime `get_space_runtime` reads. A Space runs only inside `run_space`; otherwise it sleeps (as an
        unused free Space does), or has no app file to run."""
        stage = self._stages.get(space_id) or {"stage": "SLEEPING" if has_app else "NO_APP_FILE"}
        return {**stage, "hardware": {"current": None, "requested": "cpu-basic"}, "gcTimeout": 172800,
                "storage": None, "devMode": False}

    def set_stage(self, space_id: str, stage: str | None, error: str | None = None) -> None:
        with self._lock:
            if stage is None:
                self._stages.pop(space_id, None)
            else:
                self._stages[space_id] = {"stage": stage, **({"errorMessage": error} if error else {})}

    def _write(self, space_id: str, settings: dict[str, Any]) -> None:
        path = self._path(space_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(settings))
        os.replace(tmp, path)


def settings_from_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """A new Space's settings from the body of `/api/repos/create`.

    Raises:
        BadRequest: no SDK, an unknown one, or malformed secrets or variables.
    """
    sdk = body.get("sdk")
    if sdk not in SDKS:
        raise BadRequest(f"Invalid sdk for a Space: {sdk!r}; expected one of {', '.join(SDKS)}")
    settings: dict[str, Any] = {"sdk": sdk, "secrets": {}, "variables": {}}
    for kind in ("secrets", "variables"):
        for item in body.get(kind) or []:
            settings[kind][_key(item)] = _entry(item)
    return settings


def _key(item: Any, *, value: bool = True) -> str:
    if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not item["key"]:
        raise BadRequest("Expected a JSON object with a non-empty 'key'")
    if value and not isinstance(item.get("value"), str):
        raise BadRequest(f"Expected a string 'value' for {item['key']!r}")
    return str(item["key"])


def _entry(item: dict[str, Any]) -> dict[str, Any]:
    return {"value": item["value"], "description": item.get("description"), "updatedAt": utc_now()}


def public_secrets(secrets: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Secrets as the Hub lists them: without their values."""
    return {key: {k: v for k, v in entry.items() if k != "value"} for key, entry in secrets.items()}


# ---------------------------------------------------------------- running a Docker Space


class SpaceRunError(RuntimeError):
    """A Space's command could not start, or exited before it listened on its port."""


def app_port(readme: str) -> int:
    """The `app_port` of a README's front matter (7860 when not set).

    Raises:
        SpaceRunError: the front matter does not say `sdk: docker`.
    """
    match = re.match(r"---\n(.*?)\n---", readme, re.DOTALL)
    meta = dict(re.findall(r"^(\w+):\s*(.*?)\s*$", match.group(1), re.MULTILINE)) if match else {}
    if meta.get("sdk") != "docker":
        raise SpaceRunError(f"the Space's README.md says sdk: {meta.get('sdk')!r}, not docker")
    return int(meta.get("app_port", DEFAULT_APP_PORT))


def docker_cmd(dockerfile: str) -> list[str]:
    """The last `CMD` of a Dockerfile, which must be in exec form (a JSON list), as Docker runs it.

    Raises:
        SpaceRunError: no CMD, or one in shell form.
    """
    lines = re.sub(r"\\\n", " ", dockerfile).splitlines()
    cmds = [line.strip()[3:].strip() for line in lines if line.strip().upper().startswith("CMD ")]
    if not cmds:
        raise SpaceRunError("the Dockerfile has no CMD")
    try:
        cmd = json.loads(cmds[-1])
    except json.JSONDecodeError:
        cmd = None
    if not isinstance(cmd, list) or not cmd or not all(isinstance(part, str) for part in cmd):
        raise SpaceRunError(f"the Dockerfile's CMD is not in exec form (a JSON list of strings): {cmds[-1]}")
    return cmd


@contextmanager
def run_command(
    files: Mapping[str, bytes], env: Mapping[str, str], *, on_stage: Any, timeout: float
) -> Iterator[tuple[str, int]]:
    """Run a Docker Space's CMD in a fresh folder holding its files; yield `(host, port)` once it listens.

    `env` is the whole environment but `PORT` and `HOME`, which are set here; `on_stage(stage, error)` follows it.
    """
    cmd = docker_cmd(files["Dockerfile"].decode())
    app_port(files.get("README.md", b"").decode())
    with tempfile.TemporaryDirectory(prefix="local-space-") as tmp:
        app, home = Path(tmp) / "app", Path(tmp) / "home"
        for path, content in files.items():
            (app / path).parent.mkdir(parents=True, exist_ok=True)
            (app / path).write_bytes(content)
        home.mkdir()
        port = _free_port()
        environment = {**env, "PORT": str(port), "HOME": str(home)}
        executable = shutil.which(cmd[0], path=environment.get("PATH"))
        if executable is None:
            raise SpaceRunError(f"{cmd[0]!r} of the Dockerfile's CMD is not on the PATH given to run_space")
        on_stage("APP_STARTING", None)
        process = subprocess.Popen([executable, *cmd[1:]], cwd=app, env=environment, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        output: list[str] = []
        reader = threading.Thread(target=lambda: output.extend(process.stdout or ()), daemon=True)
        reader.start()
        listened = False
        try:
            if not _wait_listening(process, port, timeout):
                reader.join(timeout=STOP_TIMEOUT)
                message = "".join(output[-30:]).strip()
                on_stage("RUNTIME_ERROR", message)
                raise SpaceRunError(f"the Space's command {cmd} did not listen on port {port} "
                                    f"(exit code {process.poll()}): {message}")
            listened = True
            on_stage("RUNNING", None)
            yield "127.0.0.1", port
        finally:
            if listened:
                on_stage(None, None)  # stopped: asleep again; a failed run keeps its RUNTIME_ERROR, as on the Hub
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            reader.join(timeout=STOP_TIMEOUT)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(process: subprocess.Popen[str], port: int, timeout: float) -> bool:
    """Whether the process listens on `port` within `timeout` seconds (False as soon as it exits), checked as the
    Hub's health check does: by connecting."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return True
        except OSError:
            pass
        try:
            process.wait(0.1)  # the pause between two tries, cut short if the command exits
            return False
        except subprocess.TimeoutExpired:
            continue
    return False
