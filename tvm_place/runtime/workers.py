"""Stage workers: where a placement device's stages run.

- :class:`LocalWorker`: in this process (the stage runs in a thread of the coordinator); for the
  devices of this host. Copies between two local workers are ``Tensor.copyto``.
- :class:`RPCWorker`: in another process or on another host, through TVM's own RPC
  (``tvm.rpc``): the stage libraries are uploaded to the server and run there by a Relax VM.
  Values cross between workers through the coordinator (download from the sender, upload to the
  receiver: TVM RPC has no peer-to-peer copy), each crossing counted and timed.
- :class:`LocalServer`: a worker process this machine starts for itself
  (``python -m tvm_place.runtime.server``), pinned to its own cores with ``TVM_NUM_THREADS`` set
  to match, so a CPU-only machine can offer its cores as several CPU devices.

Addresses a device can be given (:func:`open_worker`): ``"thread"`` (in-process), ``"process"``
(a local server started for it), ``"host:port"`` (an RPC server), ``"tracker://host:port/key"``
(a server of that key from an RPC tracker), a :class:`LocalServer`, or a ``tvm.rpc.RPCSession``.
"""

from __future__ import annotations

import atexit
import glob
import os
import random
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import DeviceUnavailableError, WorkerError, WorkerUnreachableError
from .server import END_SESSION, READY

#: Ports a local server tries, from a random start in this range (so concurrent users rarely meet).
PORT_RANGE = (20000, 60000)
PORTS_TRIED = 500


def runtime_device(kind: str, index: int):
    import tvm

    return tvm.cpu(index) if kind == "cpu" else tvm.cuda(index)


def nbytes(value) -> int:
    """Bytes of a NumPy array or a TVM tensor (local or remote)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    return int(np.prod([int(d) for d in value.shape], dtype=np.int64)) * np.dtype(str(value.dtype)).itemsize


class Worker:
    """What the stream engine needs from a worker. ``lock`` serialises every call on it."""

    #: True when values must be downloaded from it (it is another process or host).
    remote = False

    def __init__(self, label: str):
        self.label = label
        self.lock = threading.Lock()
        #: Why the worker can no longer be used (set after it died or was abandoned), or None.
        self.broken: str | None = None

    def load(self, stage: str, executable, library: str | None) -> None:
        raise NotImplementedError

    def run(self, stage: str, args: list) -> list:
        raise NotImplementedError

    def upload(self, value):
        """``value`` (NumPy array, or a tensor another worker exported) as a tensor here."""
        raise NotImplementedError

    def export(self, tensor):
        """A form of ``tensor`` that another worker can :meth:`upload` (sender side of a copy)."""
        raise NotImplementedError

    def download(self, tensor) -> np.ndarray:
        return tensor.numpy()

    def alive(self) -> bool | None:
        """False when the worker is known dead, True when known alive, None when unknown."""
        return None if self.broken is None else False

    def died(self, error: BaseException) -> bool:
        """Whether ``error`` (raised by a call on this worker) means the worker is gone."""
        return False

    def abandon(self, reason: str) -> None:
        """Give up on the worker (a call on it hangs): never use it again."""
        self.broken = reason

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"


class LocalWorker(Worker):
    """Runs stages in this process on ``tvm.cpu(index)`` or ``tvm.cuda(index)``."""

    def __init__(self, kind: str, index: int, name: str | None = None):
        super().__init__(f"thread {name or f'{kind}:{index}'}")
        self.device = runtime_device(kind, index)
        if not self.device.exist:
            raise DeviceUnavailableError(
                f"the placement runs a stage on {name or f'{kind}:{index}'}, which this machine "
                "does not have; run those stages where that device exists (an RPC worker: "
                "attach_workers(['thread', 'host:port'])) or place on the devices you have"
            )
        self._vms: dict[str, Any] = {}

    def load(self, stage, executable, library):
        from tvm import relax

        self._vms[stage] = relax.VirtualMachine(executable, self.device)

    def run(self, stage, args):
        result = self._vms[stage]["main"](*args)
        return list(result) if not hasattr(result, "numpy") else [result]

    def upload(self, value):
        import tvm

        if isinstance(value, np.ndarray):
            return tvm.runtime.tensor(value, self.device)
        if hasattr(value, "copyto"):
            return value.copyto(self.device)
        return tvm.runtime.tensor(np.asarray(value), self.device)

    def export(self, tensor):
        return tensor  # in this process: the receiver copies it with copyto

    def close(self):
        self._vms.clear()


class RPCWorker(Worker):
    """Runs stages in an RPC server's session: a process of this host or of another one."""

    remote = True

    def __init__(self, session, kind: str = "cpu", index: int = 0, label: str = "rpc",
                 server: "LocalServer | None" = None):
        super().__init__(label)
        self.session = session
        self.server = server
        self.device = session.cpu(index) if kind == "cpu" else session.cuda(index)
        self._vms: dict[str, Any] = {}
        self._uploaded: set[str] = set()

    def load(self, stage, executable, library):
        from tvm import relax

        if library is None:
            raise WorkerError(f"stage {stage!r} has no library file to upload to {self.label}")
        remote_name = f"{stage}.so"
        if remote_name not in self._uploaded:
            self.session.upload(str(library), target=remote_name)
            self._uploaded.add(remote_name)
        module = self.session.load_module(remote_name)
        self._vms[stage] = relax.VirtualMachine(module, self.device)

    def run(self, stage, args):
        vm = self._vms[stage]
        vm.set_input("main", *args)
        vm.invoke_stateful("main")
        result = vm.get_outputs("main")
        return list(result) if isinstance(result, (tuple, list)) else [result]

    def upload(self, value):
        import tvm

        if not isinstance(value, np.ndarray):
            value = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
        return tvm.runtime.tensor(value, self.device)

    def export(self, tensor):
        return tensor.numpy()

    def alive(self):
        if self.broken is not None:
            return False
        if self.server is not None:
            return self.server.alive()
        return None

    def died(self, error):
        import tvm

        if self.server is not None and not self.server.alive():
            return True
        if isinstance(error, tvm.error.RPCError) and "RPCSessionTimeoutError" not in str(error):
            return False  # the stage raised on the server; the session is intact
        return True  # the RPC layer itself failed: connection closed, server process gone

    def abandon(self, reason):
        super().abandon(reason)
        if self.server is not None and self.server.owned:
            self.server.close()  # unblocks a call stuck on it

    def close(self):
        self._vms.clear()
        if self.session is not None and self.broken is None:
            session = self.session
            try:  # a tvm-place server ends the session process now; another server: no such call
                _within(5.0, "ending the session", lambda: session.get_function(END_SESSION)())
            except WorkerError:  # not a tvm-place server, already gone, or not answering
                pass
        self.session = None
        self.device = None


# -- local worker processes ---------------------------------------------------------------------

_LIVE_SERVERS: "weakref.WeakSet[LocalServer]" = weakref.WeakSet()


def _close_all_servers() -> None:
    for server in list(_LIVE_SERVERS):
        server.close()


atexit.register(_close_all_servers)


class LocalServer:
    """A worker process on this machine: ``python -m tvm_place.runtime.server`` as a subprocess.

    ``cores``: the CPU cores it may run on (``None``: all of this process's); ``threads``:
    ``TVM_NUM_THREADS`` (default: one per core). ``role="tracker"`` starts an RPC tracker
    instead; ``tracker``/``key`` register a server with one. Its own process group, so
    :meth:`close` ends it with every session it forked; it also ends when this process does.
    Use :func:`start_local_servers` to start several at once.
    """

    def __init__(self, cores: Sequence[int] | None = None, threads: int | None = None,
                 host: str = "127.0.0.1", role: str = "server", tracker: str | None = None,
                 key: str = "", env: dict | None = None, port: int | None = None):
        self.cores = None if cores is None else sorted(int(c) for c in cores)
        self.threads = threads or (len(self.cores) if self.cores else None)
        self.host, self.role, self.tracker, self.key = host, role, tracker, key
        self.owned = True
        self.port: int | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="tvm-place-worker-", suffix=".log", delete=False)
        first = port or random.randrange(*PORT_RANGE)
        command = [
            sys.executable, "-m", "tvm_place.runtime.server", "--role", role, "--host", host,
            "--port", str(first), "--port-end", str(first + (1 if port else PORTS_TRIED)),
            "--parent-pid", str(os.getpid()), "--silent",
        ]
        if self.cores is not None:
            command += ["--cores", ",".join(map(str, self.cores))]
        if self.threads:
            command += ["--threads", str(self.threads)]
        if tracker:
            command += ["--tracker", tracker, "--key", key]
        environment = dict(os.environ if env is None else env)
        if self.threads:  # also set by the server itself; here so that it is in its exec env
            environment["TVM_NUM_THREADS"] = str(self.threads)
        if self.cores is not None:
            environment.setdefault("TVM_BIND_THREADS", "0")
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log,
            start_new_session=True, env=environment,
        )
        _LIVE_SERVERS.add(self)
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> str:
        if self.port is None:
            raise WorkerError(f"worker process {self.pid} is not ready yet (call wait_ready)")
        return f"{self.host}:{self.port}"

    def wait_ready(self, timeout: float = 120.0) -> "LocalServer":
        """Wait for the ready line; raise :class:`WorkerError` if the process fails or times out."""
        deadline = time.monotonic() + timeout
        stream = self.process.stdout
        while self.port is None:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise WorkerError(
                    f"worker process {self.pid} did not start within {timeout:.0f} s; its log: "
                    f"{self.log_tail()!r}"
                )
            readable, _, _ = select.select([stream], [], [], min(left, 0.5))
            if readable:
                chunk = os.read(stream.fileno(), 4096)
                if not chunk:  # EOF: it exited
                    code = self.process.wait(timeout=5)
                    tail = self.log_tail()
                    self.close()
                    raise WorkerError(
                        f"worker process {self.pid} exited (code {code}) before it was ready: {tail}"
                    )
                self._buffer += chunk
                for line in self._buffer.decode(errors="replace").splitlines():
                    if line.startswith(READY):
                        fields = dict(part.split("=", 1) for part in line[len(READY):].split())
                        self.port = int(fields["port"])
        return self

    def alive(self) -> bool:
        return self.process.poll() is None

    def session_pids(self) -> list[int]:
        """The processes serving sessions (forked per client), children of the server."""
        pids: list[int] = []
        for path in glob.glob(f"/proc/{self.pid}/task/*/children"):
            try:
                pids += [int(p) for p in Path(path).read_text().split()]
            except OSError:
                pass
        return sorted(set(pids))

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = Path(self._log.name).read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def describe(self) -> str:
        cores = "all cores" if self.cores is None else f"cores {self.cores}"
        port = "" if self.port is None else f":{self.port}"
        return f"process {self.pid} ({self.host}{port}, {cores}, {self.threads or 'default'} threads)"

    def close(self) -> None:
        """End the process and every session it forked; idempotent."""
        process = getattr(self, "process", None)
        if process is not None and process.poll() is None:
            for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(process.pid, sig)
                except (ProcessLookupError, PermissionError):
                    break
                try:
                    process.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if process is not None:
            # Session processes left in the group (the server was killed first): end them too.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if process.stdout is not None:
                process.stdout.close()
        _LIVE_SERVERS.discard(self)
        log = getattr(self, "_log", None)
        if log is not None and not log.closed:
            log.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"<LocalServer {self.describe()}>"


def core_groups(count: int, cores: Sequence[int] | None = None) -> list[list[int]]:
    """Split this process's CPU cores (or ``cores``) into ``count`` groups, as evenly as possible.

    With fewer cores than groups, groups share cores (round robin): the devices then compete.
    """
    available = sorted(cores if cores is not None else os.sched_getaffinity(0))
    if count <= 0:
        return []
    if len(available) < count:
        return [[available[i % len(available)]] for i in range(count)]
    size, extra = divmod(len(available), count)
    groups, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        groups.append(available[start:end])
        start = end
    return groups


def start_local_servers(groups: int | Sequence[Sequence[int] | None], threads: int | None = None,
                        timeout: float = 120.0, **options) -> list[LocalServer]:
    """Start one worker process per core group (an int: split the cores that many ways), in
    parallel, and wait until all are ready."""
    if isinstance(groups, int):
        groups = core_groups(groups)
    servers = [LocalServer(cores=group, threads=threads, **options) for group in groups]
    try:
        for server in servers:
            server.wait_ready(timeout)
    except BaseException:
        for server in servers:
            server.close()
        raise
    return servers


# -- connecting -----------------------------------------------------------------------------


def parse_address(address: str) -> tuple[str, str, int, str]:
    """``"host:port"`` -> ``("server", host, port, "")``; ``"tracker://host:port/key"`` ->
    ``("tracker", host, port, key)``."""
    kind, rest = "server", address.strip()
    if rest.startswith("tracker://"):
        kind, rest = "tracker", rest[len("tracker://"):]
    key = ""
    if kind == "tracker":
        rest, _, key = rest.partition("/")
        if not key:
            raise WorkerError(f"tracker address {address!r} names no device key: tracker://host:port/key")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise WorkerError(
            f"worker address {address!r}: expected 'host:port' or 'tracker://host:port/key'"
        )
    return kind, host.strip("[]"), int(port), key


def _within(timeout: float, what: str, function, *args):
    """Call ``function`` in a helper thread; raise :class:`WorkerUnreachableError` after
    ``timeout`` seconds (the helper is a daemon and is left to finish or hang on its own)."""
    box: dict = {}

    def call():
        try:
            box["value"] = function(*args)
        except BaseException as err:  # noqa: BLE001 - handed to the caller
            box["error"] = err

    helper = threading.Thread(target=call, daemon=True, name=f"tvm-place connect {what}")
    helper.start()
    helper.join(timeout)
    if helper.is_alive():
        raise WorkerUnreachableError(f"{what}: no answer within {timeout:g} s")
    if "error" in box:
        lines = str(box["error"]).strip().splitlines()
        raise WorkerUnreachableError(f"{what}: {lines[-1] if lines else type(box['error']).__name__}")
    return box["value"]


def _check_reachable(host: str, port: int, timeout: float, what: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        raise WorkerUnreachableError(
            f"{what}: cannot connect to {host}:{port} ({err.strerror or err}); start a worker "
            f"there with `python -m tvm_place.runtime.server --host 0.0.0.0 --port {port}` or "
            "check the address"
        ) from None


def connect(address: str, kind: str = "cpu", index: int = 0, timeout: float = 20.0,
            server: LocalServer | None = None, what: str = "worker") -> RPCWorker:
    """An :class:`RPCWorker` on the server (or a server from the tracker) at ``address``.

    ``kind``/``index``: the device on that server that runs the stages (``cuda``, 0: its first
    GPU). Every wait is bounded by ``timeout``: a closed port fails at once, a silent one after it.
    """
    from tvm import rpc

    mode, host, port, key = parse_address(address)
    where = f"{what} at {address}"
    _check_reachable(host, port, min(timeout, 5.0), where)
    if mode == "tracker":
        def request():
            return rpc.connect_tracker(host, port).request(key, max_retry=1)

        session = _within(timeout, f"{where} (tracker request for key {key!r})", request)
    else:
        session = _within(timeout, f"{where} (RPC handshake)", rpc.connect, host, port)
    label = address if server is None else server.describe()
    worker = RPCWorker(session, kind, index, label, server)
    if kind != "cpu" and not _within(timeout, f"{where} (device query)", lambda: worker.device.exist):
        raise DeviceUnavailableError(f"{where} has no {kind} device {index}")
    return worker


def session_worker(session, kind: str = "cpu", index: int = 0) -> RPCWorker:
    """An :class:`RPCWorker` on an ``RPCSession`` the caller opened."""
    return RPCWorker(session, kind, index, "rpc session")
