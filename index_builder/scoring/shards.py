"""Per-user work split over this process and forked children, each keeping its own share of the users.

The evaluation's blend search, its test scoring and the recommendation graph rank users one at a time
in Python: one core of the machine works, the others wait. :func:`user_shards` forks workers that
inherit everything already computed (bundle, scorer, caches: copy-on-write, nothing is pickled), gives
each a fixed, contiguous share of the users, and then answers ``run(arg)`` with ``fn(share, arg)`` of
every share, concatenated in the users' order: the same result as ``fn(users, arg)`` whenever each
user's result depends on that user alone. A worker keeps its state between calls, so the caches it
builds for its users (the hybrid's candidates) serve its next calls, as they do in one process.

Only on Linux (fork); elsewhere, or with one process, ``run`` calls ``fn`` here. A child must never
touch Spark: it shares the driver's socket to the JVM, so it runs pure Python/NumPy work only, and
leaves with ``os._exit`` (no atexit hooks, no Spark shutdown).
"""

from __future__ import annotations

import gc
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from index_builder.core.settings import usable_cores

T = TypeVar("T")
MIN_SHARE = 50  # users per process below which forking costs more than it saves


def _shares(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous [lo, hi) ranges covering range(n), sizes differing by at most one."""
    bounds = [n * i // parts for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _keep_jvm_connections() -> None:
    """Stop a forked child from shutting down the driver's connections to the JVM.

    A fork keeps only the forking thread: in the child, CPython frees the other threads' states, and with
    them Py4J's connection objects that only those threads held (a Spark call in flight in a background
    thread). ``ClientServerConnection.__del__`` then shuts the socket down, which the driver shares: the
    JVM closes it, and the driver's next call on it fails ("Connection reset by peer"; Py4J retries once
    on a new connection, a call waiting for its answer would fail). Only the process that made a
    connection may close it.
    """
    try:
        from py4j.clientserver import ClientServerConnection
    except ImportError:  # pragma: no cover - pyspark depends on py4j
        return
    if getattr(ClientServerConnection, "_cartwise_owner", None) is not None:
        return
    original = ClientServerConnection.__del__
    owner = os.getpid()

    def __del__(self) -> None:
        if os.getpid() == owner:
            original(self)

    ClientServerConnection.__del__ = __del__
    ClientServerConnection._cartwise_owner = owner


def _serve(conn, fn: Callable[[Sequence[Any], Any], list], share: Sequence[Any]) -> None:
    """A child's loop: receive an argument, send ``("ok", fn(share, arg))`` or ``("error", traceback)``."""
    from threadpoolctl import threadpool_limits

    try:  # FAISS's OpenMP pool did not survive the fork: a parallel region in the child would hang
        import faiss

        faiss.omp_set_num_threads(1)
    except ImportError:
        pass
    threadpool_limits(limits=1)  # one core a process: BLAS threads would only wait on each other's cores
    while True:
        try:
            command, arg = conn.recv()
        except EOFError:
            return
        if command == "stop":
            return
        try:
            conn.send(("ok", list(fn(share, arg))))
        except BaseException:  # noqa: BLE001 - the parent re-raises it with the child's traceback
            conn.send(("error", traceback.format_exc()))



@contextmanager
def user_shards(fn: Callable[[Sequence[Any], Any], Sequence[T]], users: Sequence[Any],
                processes: int | None = None) -> Iterator[Callable[[Any], list[T]]]:
    """Yield ``run(arg) -> fn(users, arg)``, computed over ``processes`` shares of ``users`` at once.

    ``fn(share, arg)`` must return one result per user of the share, in order, and must not use Spark.
    This process works on the first share; each other share has a forked worker for the whole block.
    """
    processes = usable_cores() if processes is None else max(1, processes)
    processes = min(processes, max(1, len(users) // MIN_SHARE))
    from threadpoolctl import threadpool_limits

    if processes == 1 or sys.platform != "linux":
        # one BLAS thread here too: the numbers must not depend on how many processes (or threads) ran them
        with threadpool_limits(limits=1):
            yield lambda arg: list(fn(users, arg))
        return
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    shares = [users[lo:hi] for lo, hi in _shares(len(users), processes)]
    _keep_jvm_connections()
    # no garbage left for a child to finalize: without pinned threads (PYSPARK_PIN_THREAD=false) a Py4J proxy's
    # finalizer writes to the JVM socket the driver shares; pinned, it only queues the message
    gc.collect()
    workers = []
    try:
        for share in shares[1:]:
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(theirs, fn, share), daemon=True)
            proc.start()
            theirs.close()
            workers.append((proc, mine))

        def run(arg: Any) -> list[T]:
            for _, conn in workers:
                conn.send(("run", arg))
            out = list(fn(shares[0], arg))
            for proc, conn in workers:
                try:
                    status, got = conn.recv()
                except EOFError:
                    raise RuntimeError(f"a worker process (pid {proc.pid}) died; exit code {proc.exitcode}") from None
                if status != "ok":
                    raise RuntimeError(f"a worker process failed:\n{got}")
                out += got
            return out

        with threadpool_limits(limits=1):  # this process is one of the workers too
            yield run
    finally:
        for _, conn in workers:
            with suppress(OSError):
                conn.send(("stop", None))
            conn.close()
        for proc, _ in workers:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
