"""A stage worker process: TVM's own RPC server, pinned to cores and limited in threads.

Run it by hand on any host whose devices should run stages::

    python -m tvm_place.runtime.server --host 0.0.0.0 --port 9090 --cores 0-3 --threads 4
    python -m tvm_place.runtime.server --tracker 10.0.0.1:9190 --key cpu-worker   # via a tracker
    python -m tvm_place.runtime.server --role tracker --port 9190                  # a tracker

:class:`tvm_place.runtime.workers.LocalServer` starts it as a subprocess (one per CPU device, each
on its own cores). The serving itself is ``tvm.rpc``'s: a client's session runs in a process
forked from this one, so the pinning (``os.sched_setaffinity``) and ``TVM_NUM_THREADS``, set here
before TVM loads, hold for every stage it runs. Two things differ from ``python -m
tvm.exec.rpc_server``: a session whose process dies (killed, crashed) does not end the server, and
``--parent-pid`` makes the server (with its sessions) exit when the process that started it is
gone, so no worker outlives its coordinator.

When ready it prints one line to stdout: ``tvm-place-rpc-server ready host=H port=P pid=N``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time

READY = "tvm-place-rpc-server ready"


def parse_cores(text: str | None) -> list[int] | None:
    """``"0,2-3"`` -> ``[0, 2, 3]``; ``None`` or ``""`` -> ``None`` (leave the affinity alone)."""
    if not text:
        return None
    cores: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            first, last = part.split("-", 1)
            cores.extend(range(int(first), int(last) + 1))
        elif part:
            cores.append(int(part))
    return sorted(set(cores))


def _watch_parent(parent_pid: int) -> None:
    """Exit, with every session process of this server, once ``parent_pid`` is gone."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            if os.getpgrp() == os.getpid():  # we lead our own group: take our sessions along
                os.killpg(os.getpgrp(), signal.SIGKILL)
            os._exit(0)


def _bind(host: str, port: int, port_end: int) -> tuple[socket.socket, int]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    last_error: OSError | None = None
    for candidate in range(port, max(port_end, port + 1)):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
        except OSError as err:
            sock.close()
            last_error = err
            continue
        sock.listen(8)
        return sock, candidate
    raise SystemExit(f"tvm-place server: cannot bind {host} to a port in [{port}, {port_end}): {last_error}")


def _announce(host: str, port: int) -> None:
    """Print the ready line, then send stdout to /dev/null: nobody reads the pipe after it."""
    print(f"{READY} host={host} port={port} pid={os.getpid()}", flush=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


#: Global function a client calls to end its session (see :func:`_register_end_session`).
END_SESSION = "tvm_place.server.end_session"


def _register_end_session() -> None:
    """Let a client end its session for sure: the session process exits just after answering.

    A TVM RPC server serves one session at a time, and a session lasts as long as the client
    holds any remote object (a tensor kept by a traceback is enough); the coordinator calls this
    when it closes a worker, so the server is free for the next client at once.
    """
    import tvm_ffi

    def end_session() -> int:
        threading.Timer(0.05, os._exit, (0,)).start()
        return 0

    tvm_ffi.register_global_func(END_SESSION, end_session, override=True)


def _serve_rpc(args) -> None:
    import logging

    from tvm.rpc import server as rpc_server

    _register_end_session()

    rpc_server.logger.setLevel(logging.ERROR if args.silent else logging.INFO)
    tracker = None
    if args.tracker:
        tracker_host, _, tracker_port = args.tracker.rpartition(":")
        tracker = (tracker_host, int(tracker_port))
        if not args.key:
            raise SystemExit("tvm-place server: --tracker needs --key (the device key clients request)")
    sock, port = _bind(args.host, args.port, args.port_end)
    _announce(args.host, port)
    start_dir = os.getcwd()
    listen = getattr(rpc_server, "_listen_loop", None)
    if listen is None:  # another TVM: its own server, without surviving a dead session
        sock.close()
        state = rpc_server.PopenRPCServerState(
            args.host, port, port + 1, tracker_addr=tracker, key=args.key, silent=args.silent,
            custom_addr=args.custom_addr,
        )
        state.thread.join()
        return
    while True:
        try:
            listen(sock, port, args.key, tracker, None, args.custom_addr)
        except Exception as err:  # noqa: BLE001 - a session's process died; keep serving others
            os.chdir(start_dir)  # tvm.rpc left us in the dead session's work directory
            print(f"tvm-place server: a session ended abnormally: {err}", file=sys.stderr, flush=True)
            time.sleep(0.1)


def _serve_tracker(args) -> None:
    import logging

    from tvm.rpc import tracker as rpc_tracker

    rpc_tracker.logger.setLevel(logging.ERROR if args.silent else logging.INFO)
    state = rpc_tracker.PopenTrackerServerState(args.host, args.port, args.port_end, silent=args.silent)
    _announce(args.host, state.port)
    state.thread.join()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tvm_place.runtime.server",
        description="A tvm-place stage worker: a TVM RPC server pinned to cores (or an RPC tracker).",
    )
    parser.add_argument("--role", choices=("server", "tracker"), default="server")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all)")
    parser.add_argument("--port", type=int, default=9090, help="first port to try")
    parser.add_argument("--port-end", type=int, default=9199, help="ports tried: [port, port-end)")
    parser.add_argument("--cores", help="CPU cores to run on, e.g. 0 or 0-3 or 0,2 (default: all)")
    parser.add_argument("--threads", type=int, help="TVM_NUM_THREADS (default: the number of cores)")
    parser.add_argument("--tracker", help="register with the RPC tracker at host:port")
    parser.add_argument("--key", default="", help="device key announced to the tracker")
    parser.add_argument("--custom-addr", help="address to announce to the tracker")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is no longer the parent")
    parser.add_argument("--silent", action="store_true")
    args = parser.parse_args(argv)

    cores = parse_cores(args.cores)
    if cores is not None:
        os.sched_setaffinity(0, cores)
    threads = args.threads or (len(cores) if cores else None)
    if threads:
        os.environ["TVM_NUM_THREADS"] = str(threads)
    if cores is not None:
        # TVM would otherwise bind its threads to cores of its own choosing.
        os.environ.setdefault("TVM_BIND_THREADS", "0")
    if args.parent_pid:
        threading.Thread(target=_watch_parent, args=(args.parent_pid,), daemon=True).start()
    if args.role == "tracker":
        _serve_tracker(args)
    else:
        _serve_rpc(args)


if __name__ == "__main__":
    main()
