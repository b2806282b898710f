"""What ``optimize --out`` may write into, checked before any work: a new or empty folder, or
an edgeopt run directory whose study is still there."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from edgeopt.config import RunConfig
from edgeopt.errors import ConfigError
from edgeopt.fileio import refuse_symlinks
from edgeopt.rundir import RUN_FILE, RunDir


def check_out_dir(config: RunConfig, run: RunDir) -> None:
    """Refuse (ConfigError) a folder edgeopt must not write a run into: a non-empty folder
    that is no run directory (the model's own folder, say: run files would mix into it), a
    run directory whose trials outlived its study (a new study would overwrite them), and a
    run directory with a symlink where edgeopt writes (the writes would land outside it)."""
    path = run.path
    if not path.is_dir():
        return  # missing: created by the set-up; a file: the command line refused it
    refuse_symlinks(path, [run.run_file, *_written_folders(run)])
    if not run.run_file.exists():
        others = sorted(p.name for p in path.iterdir() if not _own_transient(p.name))
        if others:
            raise ConfigError(
                f"--out {path} is a folder that holds other files ({', '.join(others[:3])}"
                f"{', ...' if len(others) > 3 else ''}) and no edgeopt run ({RUN_FILE})",
                hint="pass a new or empty folder as --out (edgeopt writes its run into it)",
            )
        return
    run.read_config()  # damaged run files: exit 2 now, not after the search
    run.read_final()
    if config.storage:
        return  # the study lives in the storage, not here
    db = run.study_db
    trials = run.trial_dir(0).parent
    if (trials.is_dir() and any(trials.iterdir())) and (not db.exists() or _empty(db)):
        state = "is empty" if db.exists() else "is gone"
        raise ConfigError(
            f"{path} holds the trials of a run, but its study ({db.name}) {state}: a new study "
            "would overwrite them",
            hint=f"restore {db} from a copy, or pass a new --out folder",
        )


def _written_folders(run: RunDir) -> list[Path]:
    trials = run.trial_dir(0).parent
    folders = [run.baseline_dir, run.cache_dir, run.report_dir, trials]
    if trials.is_dir() and not trials.is_symlink():
        folders += sorted(trials.iterdir())
    if run.cache_dir.is_dir() and not run.cache_dir.is_symlink():
        folders += sorted(run.cache_dir.iterdir())
    return folders


def _own_transient(name: str) -> bool:
    """A lock file, or a file half-written by another process setting up the same run."""
    return name.startswith(".") and name.endswith((".lock", ".tmp"))


def _empty(db: Path) -> bool:
    """A 0-byte study.db, or one that holds no study (SQLite tables, no rows)."""
    if db.stat().st_size == 0:
        return True

    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            return con.execute("SELECT count(*) FROM studies").fetchone()[0] == 0
    except sqlite3.Error:
        return False  # damaged: opening the study says so
