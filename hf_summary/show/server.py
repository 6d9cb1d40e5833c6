"""TensorBoard in this process, on a local folder, its data loaded by TensorBoard's fast loader.

The fast loader is RustBoard, the data server TensorBoard ships (`tensorboard-data-server`, what `--load_fast=true`
runs): a subprocess that reads a local logdir, keeps each tag's values reservoir-sampled (1 000 scalars a tag, the
last one always), reloads the folder every `FAST_RELOAD` seconds and answers TensorBoard over gRPC. Where it cannot
run (no binary for the platform, or it fails to start), `Board` says so once and uses TensorBoard's Python loader
(`EventMultiplexer`), reloading every `reload_interval` seconds and whenever the folder changed (`Board.changed`).

Neither loader reads a file again once it has read it: a file replaced under the same name (a mirror's file that got
shorter on the Hub, `show.mirror`) is only seen by a loader that starts over. `Board.changed(replaced=True)` does
that: a new data server is started on the folder and TensorBoard's requests go to it once it answers; the Python
loader drops its runs and reads them again.

Runs are named by their folder below the logdir. A folder that is itself a run (it holds event files) is shown
through a folder of one symlink named after it, so that `show runs/mlp` lists `mlp`, not `.`.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..source import ReadError, is_event_file

logger = logging.getLogger(__name__)

RELOAD_INTERVAL = 5.0  # seconds between the Python loader's reloads (TensorBoard's own default)
FAST_RELOAD = 1  # seconds between the data server's reloads: its smallest (whole seconds), a stat of each file
START_TIMEOUT = 30.0  # seconds for the data server to write its port


def preload() -> threading.Thread:
    """Import TensorBoard's server modules in a thread (half a second of imports), while the caller asks the Hub:
    whoever imports them next waits only for what is left."""

    def load() -> None:
        try:
            import tensorboard.data.server_ingester  # noqa: F401
            import tensorboard.program  # noqa: F401
        except ImportError:  # said when TensorBoard is used
            pass

    thread = threading.Thread(target=load, name="hf_summary-show-imports", daemon=True)
    thread.start()
    return thread


class Board:
    """TensorBoard serving the runs of `logdir` from threads of this process.

    Args:
        logdir: the folder of runs (or a run's own folder).
        name: the name of the run `logdir` itself holds, if it holds event files (default: its own name).
        host, port: where TensorBoard listens (port 0: a free one).
        reload_interval: seconds between the Python loader's reloads.
        fast: use the data server (None: when it runs here).

    Example:
        ```py
        >>> board = Board(Path("runs"))
        >>> board.start()
        'http://127.0.0.1:40117/'
        ```
    """

    def __init__(self, logdir: Path, *, name: str | None = None, host: str = "127.0.0.1", port: int = 0,
                 reload_interval: float = RELOAD_INTERVAL, fast: bool | None = None) -> None:
        self.folder = Path(logdir).resolve()
        self.name = name or self.folder.name or "."
        self.host, self.port = host, port
        self.reload_interval = reload_interval
        self.fast = fast
        self.loader = ""  # "fast" or "python", once started
        self.logdir = self.folder
        self._view: Path | None = None  # the folder of one symlink, when `logdir` is itself a run
        self._provider = _Provider()
        self._ingester: Any = None
        self._spawned: DataServer | None = None  # started before TensorBoard, connected when it asks
        self._fallback = ""  # why the fast loader cannot run, when it cannot
        self._lock = threading.Lock()

    def spawn_loader(self, *, root_is_run: bool | None = None) -> None:
        """Start the fast loader's process now, so that it reads the folder while TensorBoard starts (`start` does
        it otherwise).

        Args:
            root_is_run: whether `logdir` itself holds event files (None: look); such a run is named after it.
        """
        if root_is_run is None:
            root_is_run = self.folder.is_dir() and any(
                is_event_file(entry.name) for entry in os.scandir(self.folder) if entry.is_file())
        if root_is_run and self._view is None:
            self.logdir = self._make_view()
        if self.fast is False or self._spawned is not None or self._fallback:
            return
        try:
            from tensorboard.data import server_ingester
        except ImportError:
            return  # start() says TensorBoard is missing
        try:
            server = DataServer(server_ingester.get_server_binary(), self.logdir)
            server.spawn()
            self._spawned = server
        except (server_ingester.NoDataServerError, OSError) as error:
            self._fallback = str(error)

    def start(self, *, root_is_run: bool | None = None) -> str:
        """Start TensorBoard and return its URL.

        Args:
            root_is_run: whether `logdir` itself holds event files (None: look); such a run is named after it.

        Raises:
            ReadError: TensorBoard is not installed, or cannot listen on `host:port`.
        """
        try:
            from tensorboard import program
        except ImportError:
            raise ReadError("`hf-summary show` needs TensorBoard: pip install 'hf-summary[tensorboard]'.") from None
        self.spawn_loader(root_is_run=root_is_run)
        board = self

        class Program(program.TensorBoard):  # type: ignore[misc]
            def _make_data_provider(self) -> tuple[Any, Any]:
                return board._make_data_provider(self.flags)

        tensorboard = Program()
        tensorboard.configure(argv=[sys.argv[0], "--logdir", str(self.logdir), "--host", self.host, "--port",
                                    str(self.port), "--reload_interval", f"{self.reload_interval:g}"])
        try:
            return str(tensorboard.launch())
        except program.TensorBoardServerException as error:
            self.stop()
            raise ReadError(f"TensorBoard could not start on {self.host}:{self.port}: {error.msg}") from None

    def _make_view(self) -> Path:
        """A folder holding one symlink, named after the run, to the run's folder; or the folder itself where
        symlinks cannot be made."""
        view = Path(tempfile.mkdtemp(prefix="hf_summary-show-"))
        try:
            (view / self.name).symlink_to(self.folder, target_is_directory=True)
        except OSError as error:
            logger.info("Cannot link %s (%s): its run is named '.'", self.folder, error)
            shutil.rmtree(view, ignore_errors=True)
            return self.folder
        self._view = view
        return view

    def _make_data_provider(self, flags: Any) -> tuple[Any, Any]:
        """TensorBoard's data provider (and, for the Python loader, its multiplexer): the fast loader's if it runs."""
        from tensorboard.data import server_ingester

        if self.fast is not False:
            try:
                if self._fallback:
                    raise server_ingester.NoDataServerError(self._fallback)
                with self._lock:
                    server, self._spawned = self._spawned, None
                if server is None:
                    server = DataServer(server_ingester.get_server_binary(), self.logdir)
                    server.spawn()
                self._provider.serve(server.connect(flags.grpc_creds_type))
                self.loader = "fast"
                return self._provider, None
            except (server_ingester.NoDataServerError, server_ingester.DataServerStartupError, OSError) as error:
                if self.fast:
                    raise ReadError(f"TensorBoard's fast loader cannot run here: {error}") from None
                print(f"hf-summary: TensorBoard's fast loader (tensorboard-data-server) cannot run here ({error}): "
                      "using its Python loader, slower on large runs.", file=sys.stderr, flush=True)
        self._ingester = _PythonLoader(flags, self.logdir, self.reload_interval)
        self._ingester.start()
        self.loader = "python"
        return self._ingester.data_provider, self._ingester.deprecated_multiplexer

    def changed(self, *, replaced: bool = False) -> None:
        """The folder changed: new bytes (the Python loader reloads now; the data server sees them within
        `FAST_RELOAD` s), or (`replaced`) a file was replaced or deleted, and the loader starts over."""
        with self._lock:
            if replaced and self._spawned is not None:  # started, not yet asked by TensorBoard: start it again
                self._spawned.stop()
                self._spawned = DataServer(self._spawned.binary, self.logdir)
                self._spawned.spawn()
            elif self.loader == "fast" and replaced and self._provider.server is not None:
                old = self._provider.server
                server = DataServer(old.binary, self.logdir)
                try:
                    server.spawn()
                    self._provider.serve(server.connect(old.credentials))
                except Exception as error:  # the old one keeps serving what it read
                    logger.warning("Could not restart TensorBoard's data server: %s", error)
            elif self.loader == "python":
                self._ingester.wake(restart=replaced)

    def stop(self) -> None:
        """Stop the data server and remove the view folder; TensorBoard's threads end with the process."""
        with self._lock:
            self._provider.serve(None)
            if self._spawned is not None:
                self._spawned.stop()
                self._spawned = None
            if self._ingester is not None:
                self._ingester.stop()
        if self._view is not None:
            shutil.rmtree(self._view, ignore_errors=True)
            self._view = None


class _Provider:
    """TensorBoard's data provider, forwarded to the data server serving now: one can take another's place while
    TensorBoard runs (TensorBoard holds this object, not the server's provider). It holds the server, whose
    process lives as long as its stdin, for as long as TensorBoard holds it."""

    def __init__(self) -> None:
        self.server: DataServer | None = None
        self._current: Any = None

    def serve(self, provider_and_server: tuple[Any, DataServer] | None) -> None:
        old = self.server
        if provider_and_server is None:
            self._current, self.server = None, None
        else:
            self._current, self.server = provider_and_server
        if old is not None:
            old.stop()

    def __getattr__(self, name: str) -> Any:
        current = self.__dict__.get("_current")
        if current is None:
            raise AttributeError(name)
        return getattr(current, name)


class DataServer:
    """One run of TensorBoard's data server on `logdir`, with the flags TensorBoard gives it with `--load_fast=true`
    (TensorBoard's default sampling), polled for its port every 20 ms instead of 500 ms."""

    def __init__(self, binary: Any, logdir: Path) -> None:
        self.binary = binary
        self.logdir = logdir
        self.credentials: Any = None
        self.process: subprocess.Popen[bytes] | None = None
        self._folder = Path(tempfile.mkdtemp(prefix="hf_summary-data-server-"))

    def spawn(self) -> None:
        """Start its process: it reads the folder at once."""
        args = [self.binary.path, f"--logdir={self.logdir}", f"--reload={FAST_RELOAD}", "--samples-per-plugin=",
                "--port=0", f"--port-file={self._folder / 'port'}", "--die-after-stdin"]
        if self.binary.at_least_version("0.5.0a0"):
            args.append(f"--error-file={self._folder / 'error'}")
        # Its stdin is ours to close: the server ends when it closes (at stop(), or when this process ends).
        self.process = subprocess.Popen(args, stdin=subprocess.PIPE)

    def connect(self, credentials: Any) -> tuple[Any, DataServer]:
        """Wait for its port and return (its data provider, itself).

        Raises:
            DataServerStartupError: it exited, or wrote no port in time, or does not answer.
        """
        import grpc
        from tensorboard.data import grpc_provider, server_ingester
        from tensorboard.data.proto import data_provider_pb2

        self.credentials = credentials
        port_file, error_file = self._folder / "port", self._folder / "error"
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    message = error_file.read_text().strip() if error_file.exists() else ""
                    raise server_ingester.DataServerStartupError(
                        message or f"exited with {self.process.returncode}; its stderr says why")
                text = port_file.read_text() if port_file.exists() else ""
                if text.endswith("\n"):
                    break
                if time.monotonic() > deadline:
                    raise server_ingester.DataServerStartupError(f"no port after {START_TIMEOUT:g} s")
                time.sleep(0.02)
            address = f"localhost:{int(text)}"
            channel_credentials, options = credentials.channel_config()
            options.append(("grpc.max_receive_message_length", 256 * 1024 * 1024))
            stub = grpc_provider.make_stub(grpc.secure_channel(address, channel_credentials, options=options))
            try:
                stub.GetExperiment(data_provider_pb2.GetExperimentRequest(), timeout=5)
            except grpc.RpcError as error:
                raise server_ingester.DataServerStartupError(f"no answer at {address}: {error}") from None
        except BaseException:
            self.stop()
            raise
        shutil.rmtree(self._folder, ignore_errors=True)
        return grpc_provider.GrpcDataProvider(address, stub), self

    def stop(self) -> None:
        shutil.rmtree(self._folder, ignore_errors=True)
        process, self.process = self.process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()  # --die-after-stdin
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _python_loader_class() -> type:
    from tensorboard.backend.event_processing import data_ingester

    class PythonLoader(data_ingester.LocalDataIngester):  # type: ignore[misc]
        """TensorBoard's Python loader on the folder, reloading every `reload_interval` seconds or when woken."""

        def __init__(self, flags: Any, logdir: Path, reload_interval: float) -> None:
            super().__init__(flags)
            self._logdir = logdir
            self._interval = reload_interval
            self._wake = threading.Event()
            self._restart = False
            self._stopped = False

        def start(self) -> None:
            threading.Thread(target=self._reload_forever, name="hf_summary-show-reload", daemon=True).start()

        def wake(self, *, restart: bool = False) -> None:
            self._restart = self._restart or restart
            self._wake.set()

        def stop(self) -> None:
            self._stopped = True
            self._wake.set()

        def _reload_forever(self) -> None:
            multiplexer = self._multiplexer
            while not self._stopped:
                try:
                    if self._restart:
                        self._restart = False
                        with multiplexer._accumulators_mutex:  # every run is read again, from its first byte
                            multiplexer._accumulators.clear()
                            multiplexer._paths.clear()
                    for path, name in run_folders(self._logdir):
                        multiplexer.AddRun(str(path), name)
                    multiplexer.Reload()
                except Exception as error:  # a file vanishing mid-read: what was read stays served
                    logger.warning("Reloading the runs failed, trying again in %g s: %s", self._interval, error)
                self._wake.wait(self._interval)
                self._wake.clear()

    return PythonLoader


def _PythonLoader(flags: Any, logdir: Path, reload_interval: float) -> Any:  # noqa: N802 - a class, made late
    return _python_loader_class()(flags, logdir, reload_interval)


def run_folders(logdir: Path) -> list[tuple[Path, str]]:
    """The folders below `logdir` holding event files (symlinks followed), each with its run's name: its path below
    `logdir`, "." for `logdir` itself, as the data server names them."""
    found = []
    for folder, _, names in os.walk(logdir, followlinks=True):
        if any(is_event_file(name) for name in names):
            relpath = Path(folder).relative_to(logdir).as_posix()
            found.append((Path(folder), relpath))
    return sorted(found, key=lambda item: item[1])

