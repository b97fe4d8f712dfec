#!/usr/bin/python3
"""hearth's code interpreter: the code-execution protocol of E2B's
`@e2b/code-interpreter` SDK on port 49999, driving real Jupyter kernels
through Debian's jupyter_client.

Routes (what SDK 2.8.0 sends):
  POST   /execute               {code, context_id?, language?, env_vars?}
                                -> JSON lines: stdout, stderr, result,
                                   error, number_of_executions,
                                   end_of_execution
  POST   /contexts              {language?, cwd?} -> {id, language, cwd}
  GET    /contexts              -> [{id, language, cwd}, ...]
  DELETE /contexts/<id>         -> 204
  POST   /contexts/<id>/restart -> 204
  GET    /health                -> 200 once the default kernel is warm

Authentication: /execute (the call that runs code) needs the sandbox's
envd access token in X-Access-Token, which the SDK sends there. The token
is checked by asking envd itself (GET /envs with the same header), so a
sandbox spawned from a snapshot, re-keyed by envd's /init, is checked
against its own token with nothing to keep in sync; the same answer
carries the sandbox's environment variables, which /execute applies to
the kernel. The SDK sends no token on the /contexts calls: they work
without one (a wrong token is still refused), as E2B's do.

Runs as root from the guest init (/etc/hearth/services) and drops to the
sandbox user before starting any kernel.
"""

import json
import os
import pwd
import queue
import select
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from jupyter_client.manager import KernelManager

PORT = int(os.environ.get("HEARTH_CI_PORT", "49999"))
ENVD_URL = os.environ.get("HEARTH_CI_ENVD_URL", "http://127.0.0.1:49983")
USER = os.environ.get("HEARTH_CI_USER", "user")
# Stream output (and, separately, results) of one execution beyond this
# many bytes are dropped after a marker: a runaway print loop must not exhaust the
# server's memory (nor the client's).
OUTPUT_LIMIT = int(os.environ.get("HEARTH_CI_OUTPUT_LIMIT", str(1 << 20)))
TRUNCATED_MARKER = "[hearth: output truncated: this execution %s more than %d bytes; the rest is dropped]\n"
KERNEL_START_TIMEOUT = 120
# Code the default kernel runs once so the first user cell needs no
# imports from disk (under TCG a cold `import pandas` takes seconds).
WARM_UP = """
import io as _h_io, numpy as _h_np, pandas as _h_pd, matplotlib.pyplot as _h_plt
_h_f = _h_plt.figure(); _h_plt.plot([0, 1]); _h_f.savefig(_h_io.BytesIO(), format="png"); _h_plt.close(_h_f)
_h_pd.DataFrame({"a": [1]})._repr_html_()
del _h_io, _h_np, _h_pd, _h_plt, _h_f
"""
LANGUAGES = {"python": "python3"}
ALIASES = {"python3": "python", "py": "python"}

# MIME type -> result field of the SDK's Result.
MIME_FIELDS = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
}


class HTTPError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class ClientGone(Exception):
    """The client closed the connection (the SDK's timeoutMs aborts)."""


class Context:
    """One kernel with its own variables and working directory."""

    def __init__(self, language, cwd, env):
        self.id = str(uuid.uuid4())
        self.language = language
        self.cwd = cwd
        self.lock = threading.Lock()  # one execution at a time per kernel
        self.applied_env = {}  # sandbox variables already set in the kernel
        self.km = KernelManager(kernel_name=LANGUAGES[language])
        self.km.start_kernel(cwd=cwd, env=env)
        self.kc = None
        self._connect()

    def info(self):
        return {"id": self.id, "language": self.language, "cwd": self.cwd}

    def _connect(self):
        if self.kc is not None:
            self.kc.stop_channels()
        self.kc = self.km.blocking_client()
        # No heartbeat channel: it pings the kernel every second (a wake-up
        # of this server and of the kernel, each second, in every idle
        # sandbox); liveness comes from the kernel process (km.is_alive).
        self.kc.start_channels(hb=False)
        self.kc.wait_for_ready(timeout=KERNEL_START_TIMEOUT)

    def restart(self):
        """Restarts the kernel (same cwd, fresh variables)."""
        self.km.restart_kernel(now=True)
        self.applied_env = {}
        self._connect()

    def shutdown(self):
        try:
            self.kc.stop_channels()
        finally:
            self.km.shutdown_kernel(now=True)

    def run_silent(self, code, timeout=KERNEL_START_TIMEOUT):
        """Runs code without output or history; raises on an error."""
        msg_id = self.kc.execute(code, silent=True, store_history=False, allow_stdin=False, stop_on_error=False)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("kernel did not answer in %ds" % timeout)
            try:
                reply = self.kc.get_shell_msg(timeout=min(left, 1))
            except queue.Empty:
                if not self.km.is_alive():
                    raise RuntimeError("kernel died")
                continue
            if reply["parent_header"].get("msg_id") == msg_id:
                if reply["content"].get("status") != "ok":
                    raise RuntimeError("%s: %s" % (reply["content"].get("ename"), reply["content"].get("evalue")))
                return

    def execute(self, code, sandbox_env, run_env, emit, gone):
        """Runs code, handing JSON-able messages to emit as they come.

        gone() says whether the client went away: the kernel is then
        interrupted (it stays usable) and the rest is drained unsent.
        """
        with self.lock:
            self._apply_sandbox_env(sandbox_env)
            restore = None
            if run_env:
                restore = self._set_env(run_env)
            try:
                self._execute(code, emit, gone)
            finally:
                if restore is not None and self.km.is_alive():
                    self.run_silent(restore)

    def _apply_sandbox_env(self, env):
        changed = {k: v for k, v in env.items() if self.applied_env.get(k) != v}
        if changed:
            self.run_silent("import os as _h_os\n_h_os.environ.update(%r)\ndel _h_os" % (changed,))
            self.applied_env.update(changed)

    def _set_env(self, env):
        """Sets env for one run; returns the code that undoes it."""
        env = {str(k): str(v) for k, v in env.items()}
        self.run_silent(
            "import os as _h_os\n_h_saved_env = {k: _h_os.environ.get(k) for k in %r}\n"
            "_h_os.environ.update(%r)\ndel _h_os" % (list(env), env))
        return ("import os as _h_os\nfor _h_k, _h_v in _h_saved_env.items():\n"
                "    _h_os.environ.pop(_h_k, None) if _h_v is None else _h_os.environ.__setitem__(_h_k, _h_v)\n"
                "del _h_os, _h_k, _h_v, _h_saved_env")

    def _execute(self, code, emit, gone):
        # stop_on_error=False: otherwise ipykernel aborts the requests that
        # arrive right after a failed cell (the next runCode would be lost).
        msg_id = self.kc.execute(code, allow_stdin=False, stop_on_error=False)
        budget = Budget(OUTPUT_LIMIT, emit)
        interrupted_at = None
        while True:
            if interrupted_at is None and gone():
                self.km.interrupt_kernel()
                interrupted_at = time.monotonic()
                budget.mute()
            if interrupted_at is not None and time.monotonic() - interrupted_at > 30:
                # Interrupt ignored (code catching KeyboardInterrupt in a
                # loop): a restart is the only way to free the kernel.
                self.restart()
                return
            try:
                msg = self.kc.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                if not self.km.is_alive():
                    self._died(budget)
                    return
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                budget.stream("stdout" if content.get("name") == "stdout" else "stderr", content.get("text", ""))
            elif kind in ("execute_result", "display_data"):
                budget.result(content.get("data", {}), kind == "execute_result")
            elif kind == "error":
                budget.send({
                    "type": "error",
                    "name": content.get("ename", ""),
                    "value": content.get("evalue", ""),
                    "traceback": "\n".join(content.get("traceback", []))[:65536],
                })
            elif kind == "execute_input":
                budget.send({"type": "number_of_executions", "execution_count": content.get("execution_count")})
            elif kind == "status" and content.get("execution_state") == "idle":
                break
        self._drain_shell(msg_id)
        budget.send({"type": "end_of_execution"})

    def _drain_shell(self, msg_id):
        """Consumes the execute_reply so replies do not pile up."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                reply = self.kc.get_shell_msg(timeout=0.5)
            except queue.Empty:
                return
            if reply["parent_header"].get("msg_id") == msg_id:
                return

    def _died(self, budget):
        """The kernel process exited mid-cell (os._exit, a segfault, the
        OOM killer): report it and start a fresh kernel for the next call."""
        budget.send({
            "type": "error",
            "name": "DeadKernelError",
            "value": "the kernel died while running this code; it was restarted and its variables are gone",
            "traceback": "",
        })
        self.restart()
        budget.send({"type": "end_of_execution"})


class Budget:
    """Caps what one execution sends: OUTPUT_LIMIT bytes of stdout/stderr
    and as much again of results, each followed by one marker once
    exceeded; the rest is dropped (a final small result still arrives
    after a flood of prints)."""

    def __init__(self, limit, emit):
        self.limit = limit
        self.left = {"stream": limit, "result": limit}
        self.cut = set()
        self.emit = emit
        self.muted = False

    def mute(self):
        self.muted = True

    def send(self, msg):
        if not self.muted:
            self.emit(msg)

    def _truncate(self, kind):
        self.cut.add(kind)
        what = "printed" if kind == "stream" else "displayed results of"
        self.send({"type": "stderr", "text": TRUNCATED_MARKER % (what, self.limit), "timestamp": now_iso()})

    def stream(self, name, text):
        if "stream" in self.cut:
            return
        left = self.left["stream"]
        if len(text) <= left:
            self.left["stream"] = left - len(text)
            self.send({"type": name, "text": text, "timestamp": now_iso()})
            return
        if left > 0:  # keep what fits, then the marker
            self.left["stream"] = 0
            self.send({"type": name, "text": text[:left], "timestamp": now_iso()})
        self._truncate("stream")

    def result(self, data, is_main):
        if "result" in self.cut:
            return
        msg = {"type": "result", "is_main_result": is_main}
        extra = {}
        for mime, value in data.items():
            field = MIME_FIELDS.get(mime)
            if field is None:
                extra[mime] = value
            else:
                msg[field] = value
        if extra:
            msg["extra"] = extra
        size = len(json.dumps(msg))
        if size > self.left["result"]:
            self._truncate("result")
            return
        self.left["result"] -= size
        self.send(msg)


def now_iso():
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"


class Interpreter:
    """The contexts of this sandbox and the default one per language."""

    def __init__(self, home):
        self.home = home
        self.mu = threading.Lock()
        self.contexts = {}
        self.defaults = {}  # language -> context id
        self.default_ready = threading.Event()
        self.default_error = None

    def kernel_env(self, extra=None):
        env = dict(os.environ)
        if USER:
            env.update({"HOME": self.home, "USER": USER, "LOGNAME": USER})
        env.pop("HEARTH_CI_PORT", None)
        # ipykernel's debugger otherwise warns about frozen modules on
        # every kernel start (on stderr, which is the slow serial console).
        env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
        if extra:
            env.update(extra)
        return env

    def start_default(self):
        try:
            ctx = Context("python", self.home, self.kernel_env())
            ctx.run_silent(WARM_UP)
            with self.mu:
                self.contexts[ctx.id] = ctx
                self.defaults["python"] = ctx.id
        except Exception as e:  # reported by /health and /execute
            self.default_error = "default kernel: %s" % e
            print("code-interpreter: %s" % self.default_error, file=sys.stderr, flush=True)
        finally:
            self.default_ready.set()

    def create(self, language, cwd):
        language = normalise_language(language)
        cwd = cwd or self.home
        if not os.path.isabs(cwd):
            raise HTTPError(400, "cwd must be an absolute path, got %r" % cwd)
        try:
            os.makedirs(cwd, exist_ok=True)
        except OSError as e:
            raise HTTPError(400, "cwd %s: %s" % (cwd, e.strerror))
        ctx = Context(language, cwd, self.kernel_env())
        with self.mu:
            self.contexts[ctx.id] = ctx
        return ctx

    def get(self, context_id):
        with self.mu:
            ctx = self.contexts.get(context_id)
        if ctx is None:
            raise HTTPError(404, "context %s not found" % context_id)
        return ctx

    def default(self, language):
        language = normalise_language(language)
        if language == "python" and not self.default_ready.wait(KERNEL_START_TIMEOUT):
            raise HTTPError(503, "the default kernel is still starting")
        with self.mu:
            ctx = self.contexts.get(self.defaults.get(language, ""))
        if ctx is not None:
            return ctx
        # First use of a language, or its default context was removed.
        ctx = self.create(language, self.home)
        with self.mu:
            self.defaults[language] = ctx.id
        return ctx

    def remove(self, context_id):
        ctx = self.get(context_id)
        with self.mu:
            self.contexts.pop(context_id, None)
            for lang, cid in list(self.defaults.items()):
                if cid == context_id:
                    del self.defaults[lang]
        # An execution holding the lock ends at the interrupt.
        ctx.km.interrupt_kernel()
        with ctx.lock:
            ctx.shutdown()

    def restart(self, context_id):
        ctx = self.get(context_id)
        ctx.km.interrupt_kernel()
        with ctx.lock:
            ctx.restart()

    def list(self):
        with self.mu:
            return [c.info() for c in self.contexts.values()]


def normalise_language(language):
    language = (language or "python").strip().lower()
    language = ALIASES.get(language, language)
    if language not in LANGUAGES:
        raise HTTPError(400, "language %r is not available in this sandbox (available: %s)"
                        % (language, ", ".join(sorted(LANGUAGES))))
    return language


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hearth-code-interpreter"
    interp = None  # set by main

    def log_message(self, format, *args):
        pass  # the serial console is slow under TCG: log errors only

    # -- plumbing -----------------------------------------------------

    def _send_json(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_empty(self, code=204):
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n > 64 << 20:
            raise HTTPError(413, "request body over 64 MiB")
        raw = self.rfile.read(n) if n else b""
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise HTTPError(400, "body is not JSON: %s" % e)
        if not isinstance(body, dict):
            raise HTTPError(400, "body must be a JSON object")
        return body

    def _envd(self, required):
        """Checks X-Access-Token with envd; returns the sandbox's env vars."""
        token = self.headers.get("X-Access-Token")
        if not token:
            if required:
                raise HTTPError(401, "missing access token (X-Access-Token header)")
            return None
        req = urllib.request.Request(ENVD_URL + "/envs", headers={"X-Access-Token": token})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                env = json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            if e.code == 401:
                raise HTTPError(401, "invalid access token")
            raise HTTPError(502, "envd answered %d checking the access token" % e.code)
        except (OSError, ValueError) as e:
            raise HTTPError(502, "cannot reach envd to check the access token: %s" % e)
        return {str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {}

    def _route(self, method):
        try:
            # Read the body before any answer: an unread body would be
            # parsed as the next request on this keep-alive connection.
            body = self._body()
            path = self.path.split("?", 1)[0].rstrip("/") or "/"
            parts = path.strip("/").split("/")
            if method == "GET" and path == "/health":
                return self._health()
            if path == "/execute" and method == "POST":
                return self._execute(body)
            if parts[0] == "contexts":
                self._envd(required=False)
                if len(parts) == 1 and method == "POST":
                    ctx = self.interp.create(body.get("language"), body.get("cwd"))
                    return self._send_json(200, ctx.info())
                if len(parts) == 1 and method == "GET":
                    return self._send_json(200, self.interp.list())
                if len(parts) == 2 and method == "DELETE":
                    self.interp.remove(parts[1])
                    return self._send_empty()
                if len(parts) == 3 and parts[2] == "restart" and method == "POST":
                    self.interp.restart(parts[1])
                    return self._send_empty()
            raise HTTPError(404, "no route %s %s" % (method, path))
        except HTTPError as e:
            self._send_json(e.code, {"code": e.code, "message": e.message})
        except (BrokenPipeError, ConnectionResetError, ClientGone):
            self.close_connection = True
        except Exception as e:  # a bug here must not kill the server
            print("code-interpreter: %s %s: %r" % (method, self.path, e), file=sys.stderr, flush=True)
            try:
                self._send_json(500, {"code": 500, "message": str(e)})
            except OSError:
                self.close_connection = True

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def do_DELETE(self):
        self._route("DELETE")

    # -- routes ---------------------------------------------------------

    def _health(self):
        if not self.interp.default_ready.is_set():
            return self._send_json(503, {"code": 503, "message": "the default kernel is starting"})
        if self.interp.default_error:
            return self._send_json(503, {"code": 503, "message": self.interp.default_error})
        self._send_json(200, {"status": "ok"})

    def _execute(self, body):
        sandbox_env = self._envd(required=True)
        code = body.get("code")
        if not isinstance(code, str):
            raise HTTPError(400, "code is required (a string)")
        if body.get("context_id") and body.get("language"):
            raise HTTPError(400, "give context_id or language, not both")
        run_env = body.get("env_vars") or {}
        if not isinstance(run_env, dict):
            raise HTTPError(400, "env_vars must be an object")
        if body.get("context_id"):
            ctx = self.interp.get(body["context_id"])
        else:
            ctx = self.interp.default(body.get("language"))

        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        sock = self.connection
        gone_state = [False]

        def emit(msg):
            if gone_state[0]:
                return
            line = (json.dumps(msg) + "\n").encode()
            try:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            except OSError:
                gone_state[0] = True

        def gone():
            if not gone_state[0]:
                gone_state[0] = peer_closed(sock)
            return gone_state[0]

        ctx.execute(code, sandbox_env, run_env, emit, gone)
        if gone_state[0]:
            raise ClientGone()
        self.wfile.write(b"0\r\n\r\n")


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client hanging up between requests is routine, not a trace.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def peer_closed(sock):
    """True when the peer closed its side (readable with nothing to read)."""
    try:
        r, _, _ = select.select([sock], [], [], 0)
        if not r:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def drop_privileges():
    """Root (the guest init) becomes the sandbox user; returns its home."""
    if os.getuid() != 0 or not USER:
        return os.environ.get("HOME") or os.getcwd()
    pw = pwd.getpwnam(USER)
    os.setgroups(os.getgrouplist(pw.pw_name, pw.pw_gid))
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    os.environ.update({"HOME": pw.pw_dir, "USER": USER, "LOGNAME": USER})
    os.chdir(pw.pw_dir)
    return pw.pw_dir


def kill_kernels_on_term(interp):
    """SIGTERM (init's shutdown, a test) takes the kernels along: they run
    in their own sessions and would otherwise outlive the server."""

    def handler(signum, frame):
        with interp.mu:
            contexts = list(interp.contexts.values())
        for ctx in contexts:
            proc = getattr(ctx.km.provisioner, "process", None)
            if proc is not None:
                try:
                    proc.kill()
                except OSError:
                    pass
        os._exit(0)

    signal.signal(signal.SIGTERM, handler)


def main():
    home = drop_privileges()
    interp = Interpreter(home)
    Handler.interp = interp
    kill_kernels_on_term(interp)
    server = Server(("0.0.0.0", PORT), Handler)
    # Listen first: /health answers (503) while the kernel warms up.
    threading.Thread(target=interp.start_default, daemon=True).start()
    print("code-interpreter: listening on %d" % server.server_address[1], file=sys.stderr, flush=True)
    # poll_interval only bounds how late shutdown() is noticed (never
    # called: SIGTERM exits); the default 0.5 s woke an idle sandbox twice
    # a second.
    server.serve_forever(poll_interval=3600)


if __name__ == "__main__":
    main()
