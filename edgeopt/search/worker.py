"""A worker process that joins a run's study: ``python -m edgeopt.search.worker RUN_DIR``."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import Any

from edgeopt.search.study import Worker


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--trials", type=int)
    parser.add_argument("--timeout", type=float)
    parser.add_argument("--index", type=int, default=0)
    args = parser.parse_args()
    worker = Worker.open(args.run_dir, worker_index=args.index)

    def _stop(signum: int, frame: Any) -> None:
        worker.stop = True

    signal.signal(signal.SIGINT, _stop)
    worker.run(args.trials, args.timeout)


if __name__ == "__main__":
    main()
