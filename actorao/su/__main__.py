"""``python -m actorao.su CONFIG_JSON``: a scheduler shard process, as the node starts it."""

from __future__ import annotations

import logging
import os
import sys

from actorao.su._shard import ShardConfig, run_shard

if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("ACTORAO_LOG", "WARNING"),
                        format="%(asctime)s shard %(process)d %(name)s %(levelname)s %(message)s")
    run_shard(ShardConfig.from_json(sys.argv[1]))
