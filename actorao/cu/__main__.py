"""``python -m actorao.cu CONFIG_JSON``: a CU worker process, as the pool starts it."""

from __future__ import annotations

import logging
import os
import sys

from actorao.cu._worker import WorkerConfig, run_worker

if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("ACTORAO_LOG", "WARNING"),
                        format="%(asctime)s worker %(process)d %(name)s %(levelname)s %(message)s")
    run_worker(WorkerConfig.from_json(sys.argv[1]))
