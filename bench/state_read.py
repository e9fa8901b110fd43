"""Issue 16's target for state reads: a 1 GiB state read gets 0 worker restarts, and the node's RSS
grows by less than 64 MiB. A WAT module grows its memory to 1 GiB and marks every 64 KiB page
(with random bytes in every ``--noise``-th page, so the stored checkpoint is not all zeros); the
state is read over HTTP by a separate OS process, while a thread samples the node process's RSS.

    .venv/bin/python -m bench.state_read [--reads 3] [--noise 16]   # prints a JSON line of figures
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import psutil
import wasmtime

from actorao import Node
from actorao.http import HttpServer

PAGES = 16384  # 1 GiB of 64 KiB wasm pages
REPLY = '{"ok":true,"response":{"Output":"grown","Messages":[],"Spawns":[],"Assignments":[]}}'


def grower(noise_every: int) -> bytes:
    """Grows to PAGES pages on its first message and writes each page's number at its start; every
    ``noise_every``-th page also gets 4 KiB of xorshift noise, which zstd cannot shrink."""
    reply = REPLY.replace('"', '\\"')
    return bytes(wasmtime.wat2wasm(f"""
(module
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (data (i32.const 8) "{reply}\\00")
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func (export "handle") (param $msg i32) (param $env i32) (result i32)
    (local $page i32) (local $at i32) (local $x i32)
    (if (i32.lt_u (memory.size) (i32.const {PAGES}))
      (then (drop (memory.grow (i32.sub (i32.const {PAGES}) (memory.size))))))
    (local.set $x (i32.const 2463534242))
    (local.set $page (i32.const 2))
    (loop $pages
      (i32.store (i32.shl (local.get $page) (i32.const 16)) (local.get $page))
      (if (i32.eqz (i32.rem_u (local.get $page) (i32.const {noise_every})))
        (then
          (local.set $at (i32.add (i32.shl (local.get $page) (i32.const 16)) (i32.const 4)))
          (loop $noise
            (local.set $x (i32.xor (local.get $x) (i32.shl (local.get $x) (i32.const 13))))
            (local.set $x (i32.xor (local.get $x) (i32.shr_u (local.get $x) (i32.const 17))))
            (local.set $x (i32.xor (local.get $x) (i32.shl (local.get $x) (i32.const 5))))
            (i32.store (local.get $at) (local.get $x))
            (local.set $at (i32.add (local.get $at) (i32.const 4)))
            (br_if $noise (i32.lt_u (local.get $at)
                                    (i32.add (i32.shl (local.get $page) (i32.const 16)) (i32.const 4096)))))))
      (local.set $page (i32.add (local.get $page) (i32.const 1)))
      (br_if $pages (i32.lt_u (local.get $page) (i32.const {PAGES}))))
    (global.set $heap (i32.const 65536))
    (i32.const 8)))
"""))


READER = """
import hashlib, http.client, sys
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
connection = http.client.HTTPConnection(host, port, timeout=600)
connection.request("GET", path)
response = connection.getresponse()
digest, size = hashlib.sha256(), 0
while chunk := response.read(1 << 20):
    digest.update(chunk)
    size += len(chunk)
print(response.status, size, digest.hexdigest(), response.getheader("Last-Ordinate"), flush=True)
"""


def restarts(tree: dict[str, Any]) -> int:
    return int(tree.get("restarts", 0)) + sum(restarts(child) for child in tree.get("children", ()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=3)
    parser.add_argument("--noise", type=int, default=16, help="every Nth page gets 4 KiB of noise")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    me = psutil.Process()
    with tempfile.TemporaryDirectory() as folder, \
            Node(Path(folder) / "node", workers=1, memory_limit=2 << 30) as node, HttpServer(node, port=0) as server:
        pid = node.spawn(grower(args.noise), {"Name": "big"})
        node.result(node.send(pid, {"Action": "Grow"}).id, timeout=300).raise_for_error()
        restarts_before = restarts(node.tree())
        baseline = me.memory_info().rss
        peak = [baseline]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                peak[0] = max(peak[0], me.memory_info().rss)
                time.sleep(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        reads = []
        for _ in range(args.reads):
            started = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", READER, server.host, str(server.port), f"/state/{pid}"],
                                 capture_output=True, text=True, check=True, timeout=900).stdout.split()
            reads.append({"status": int(out[0]), "bytes": int(out[1]), "sha256": out[2], "last_ordinate": out[3],
                          "seconds": round(time.perf_counter() - started, 2)})
        print("reads", reads, file=sys.stderr, flush=True)
        sampling.set()
        sampler.join()
        grown = peak[0] - baseline
        # The same memory read in-process, chunk by chunk, with every page's mark checked.
        digest, marks_ok, at = hashlib.sha256(), True, 0
        stream = node.state_stream(pid)
        for chunk in stream.chunks():
            digest.update(chunk)
            for offset in range(-at % 65536, len(chunk), 65536):
                page = (at + offset) >> 16
                if page >= 2:
                    marks_ok &= int.from_bytes(chunk[offset:offset + 4], "little") == page
            at += len(chunk)
        stored = sum(size for _, size in node.reads.checkpoints(pid))
        print(orjson.dumps({
            "memory_bytes": stream.size, "stored_checkpoint_bytes": stored, "reads": reads,
            "all_reads_equal_the_stream": all(r["sha256"] == digest.hexdigest() and r["bytes"] == stream.size
                                              for r in reads),
            "page_marks_ok": marks_ok, "worker_restarts": restarts(node.tree()) - restarts_before,
            "node_rss_before_mib": round(baseline / 2**20, 1), "node_rss_peak_growth_mib": round(grown / 2**20, 1),
        }).decode())


if __name__ == "__main__":
    main()
