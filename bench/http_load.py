"""A load generator for AO's HTTP API, run as an OS process of its own so that it does not share the
node's GIL: posts pre-signed data items over keep-alive connections from a few threads.

    python -m bench.http_load URL ITEMS_FILE CONNECTIONS    # prints {"seconds": ..., "statuses": {...}}
"""

from __future__ import annotations

import http.client
import sys
import threading
import time
import urllib.parse
from collections import Counter

import orjson


def main(url: str, items_file: str, connections: int) -> None:
    with open(items_file, "rb") as file:
        items: list[bytes] = [bytes.fromhex(line) for line in file.read().decode().split()]
    parsed = urllib.parse.urlsplit(url)
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    shares = [items[index::connections] for index in range(connections)]

    def post_all(share: list[bytes]) -> None:
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
        seen: Counter[int] = Counter()
        for body in share:
            connection.request("POST", "/", body, {"Content-Type": "application/octet-stream"})
            reply = connection.getresponse()
            reply.read()
            seen[reply.status] += 1
        connection.close()
        with lock:
            statuses.update(seen)

    threads = [threading.Thread(target=post_all, args=(share,)) for share in shares]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    print(orjson.dumps({"seconds": elapsed, "statuses": {str(k): v for k, v in statuses.items()}}).decode())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
