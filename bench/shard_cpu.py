"""A scheduler shard's CPU per message, in one Python process: the shard's own request handling
(``Shard.take``) and group commits (``assign_queued``), on a real LMDB store with real ZeroMQ
sockets (a thread drains the answers, and the feeds of two workers, on which the processes are
placed). No workers: this measures the shard alone, which ``actorao bench`` shows beside the other
OS processes.

    python -m bench.shard_cpu [PROCESSES] [MESSAGES] [PER_COMMIT]    # e.g. 100 60000 1000

Messages go out in requests of 250 (the bench driver's batch), round-robin over the processes, and
the shard commits after every PER_COMMIT of them. Prints one JSON line: CPU µs per message (user
and system, of the whole OS process; and of the shard's loop alone, without the thread that drains
its answers and ZeroMQ's), wall µs per message, the number of commits, the bytes the process handed to
write calls per message (LMDB's dirty pages and the ZeroMQ frames), and the leaf pages and entries of
the log (its index and its entries) and of the messages index at the end. Compare two trees by running it in
each, interleaved, a few times: CPU time is less noisy than wall time on a shared box.
"""

from __future__ import annotations

import gc
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
import zmq

from actorao.mailbox import acks_address, feed_address, open_socket
from actorao.message import Process, checked_message_tags, new_id, with_ao_tags
from actorao.persist import Store
from actorao.su._feeds import Feeds
from actorao.su._shard import Shard, ShardConfig, _Replies
from actorao.su._wire import request

BATCH = 250
_LOG_DBS = ("log", "entries", "slots", "numbers", "messages")  # what a commit of the log writes, in any tree
WORKERS = 2


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def _written() -> int:
    """Bytes this OS process has handed to write calls so far (Linux's /proc/self/io ``wchar``)."""
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("wchar:"))


def main(processes: int, messages: int, per_commit: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as path:
        runtime = Path(path) / "runtime"
        runtime.mkdir()
        store = Store(Path(path) / "data", map_size=1 << 30)
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        sinks = [open_socket(context, zmq.PULL, acks_address(runtime), bind=True, high_water_mark=0)] + [
            open_socket(context, zmq.PULL, feed_address(runtime, worker), bind=True, high_water_mark=0)
            for worker in range(WORKERS)]
        poller = zmq.Poller()
        for sink in sinks:
            poller.register(sink, zmq.POLLIN)
        stop = threading.Event()

        def drain() -> None:
            while True:
                ready = dict(poller.poll(50))
                if not ready and stop.is_set():
                    return
                for sink in ready:
                    sink.recv()

        drainer = threading.Thread(target=drain)
        drainer.start()
        replies = _Replies(open_socket(context, zmq.PUSH, acks_address(runtime), bind=False, high_water_mark=0),
                           Feeds(context, runtime), 0)
        identity = new_id()
        shard = Shard(ShardConfig(0, str(Path(path) / "data"), str(runtime), identity, identity, 1 << 30, 1 << 20,
                                  os.getpid()), store, replies)
        pids = []
        for number in range(processes):
            tags = with_ao_tags({"Module": identity, "Scheduler": identity}, "Process")
            process = Process(new_id(), identity, identity, identity, tags)
            shard.su.submit(process, fresh_id=True)
            pids.append(process.id)
            if number % 1000 == 999:
                shard.su.assign_queued()
        shard.su.assign_queued()
        shard.replies.place({pid: number % WORKERS for number, pid in enumerate(pids)})
        tags = checked_message_tags({"Action": "noop"})
        frames = [request(token, new_rows=([(pids[(start + at) % processes], 0, "", "") for at in range(BATCH)],
                                           [tags]))
                  for token, start in enumerate(range(0, messages, BATCH))]
        commits = shard.su.commits
        gc.freeze()  # as run_shard does: the young generation is collected rarely, what the shard holds never
        gc.set_threshold(20_000, 10, 10)
        written = _written()
        user, system = _cpu()
        thread = time.thread_time()
        began = time.perf_counter()
        taken = 0
        for number, frame in enumerate(frames):
            shard.take(frame, 1_700_000_000_000 + number)
            taken += BATCH
            if taken >= per_commit:
                shard.su.assign_queued()
                taken = 0
        shard.su.assign_queued()
        wall = time.perf_counter() - began
        thread = time.thread_time() - thread
        user_after, system_after = _cpu()
        written = _written() - written
        sent = len(frames) * BATCH
        result = {"processes": processes, "messages": sent, "commits": shard.su.commits - commits,
                  "cpu_us": round((user_after - user + system_after - system) / sent * 1e6, 1),
                  "user_us": round((user_after - user) / sent * 1e6, 1),
                  "system_us": round((system_after - system) / sent * 1e6, 1),
                  "loop_us": round(thread / sent * 1e6, 1),
                  "wall_us": round(wall / sent * 1e6, 1),
                  "written_bytes": round(written / sent),
                  **store.read(lambda txn: {f"{name}_{field}": txn.stat(db)[field]
                                            for name, db in store.db.items() if name in _LOG_DBS
                                            for field in ("leaf_pages", "entries")})}
        stop.set()
        shard.close()
        drainer.join()
        replies.close()
        for sink in sinks:
            sink.close(linger=0)
        context.term()
        store.close()
        return result


if __name__ == "__main__":
    arguments = [int(value) for value in sys.argv[1:4]]
    defaults = [100, 60_000, 1000]
    print(orjson.dumps(main(*(arguments + defaults[len(arguments):]))).decode())
