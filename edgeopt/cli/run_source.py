"""The run a reading command reads (``report``, ``export``): RUN_DIR, or a shared study in
--storage from any machine, with the artifact store its workers uploaded to."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def run_source_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``[RUN_DIR] [--storage URL --study NAME] [--artifacts DIR]``."""
    f = click.option(
        "--artifacts",
        help="Artifact store the workers uploaded to (folder or s3://BUCKET); default: the "
        "one the run recorded.",
    )(f)
    f = click.option(
        "--study", "study_name", default="edgeopt", show_default=True, help="Study name."
    )(f)
    f = click.option(
        "--storage", help="Read the shared study at this URL instead of a run directory."
    )(f)
    return click.argument("run_dir", required=False, type=click.Path(file_okay=False))(f)


def run_source(run_dir: str | None, storage: str | None, study: str, artifacts: str | None) -> Any:
    """The run to read: RUN_DIR, or the study in --storage (exactly one)."""
    from edgeopt.errors import ConfigError
    from edgeopt.search.study.source import RunSource
    from edgeopt.search.study.storage import adopt_password

    if (run_dir is None) == (storage is None):
        raise ConfigError(
            "give either RUN_DIR or --storage URL --study NAME",
            hint="RUN_DIR is an `edgeopt optimize` output; --storage reads a shared study "
            "from any machine",
        )
    if run_dir is not None:
        return RunSource.local(run_dir, artifacts)
    return RunSource(None, adopt_password(str(storage)), study, artifacts)
