"""The preprocessing recipe carried by what edgeopt hands out: ONNX metadata
(``metadata_props["edgeopt.preprocess"]``, the recipe's JSON) inside the model file, and
``X.preprocess.json`` beside a model file ``X`` (named after the model, like the ``X.json`` of
an export, so two models in one folder do not share one). An app reads either and repeats the
recipe (``Preprocess.formula`` says it in words); ``bench``/``check --data DIR`` read the
metadata and score with the very same recipe.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeopt.data.preprocess import Preprocess
from edgeopt.errors import ConfigError
from edgeopt.fileio import write_atomic

METADATA_KEY = "edgeopt.preprocess"
SIDECAR_SUFFIX = ".preprocess.json"


def recipe_json(recipe: Preprocess) -> str:
    """The recipe as the JSON both the metadata and the sidecar hold (keys sorted, so the
    same recipe gives the same bytes and a re-stamp changes nothing)."""
    return json.dumps(recipe.to_dict(), indent=2, sort_keys=True)


def sidecar_path(model_path: str | Path) -> Path:
    """``dir/X.preprocess.json`` for the model ``dir/X.onnx`` (or ``X.pt`` ...)."""
    p = Path(model_path)
    return p.with_name(p.stem + SIDECAR_SUFFIX)


def write_sidecar(model_path: str | Path, recipe: Preprocess) -> Path:
    """Write ``X.preprocess.json`` beside the model file ``X`` (atomically); its path."""
    return write_atomic(sidecar_path(model_path), recipe_json(recipe) + "\n")


def stamp(onnx_path: str | Path, recipe: Preprocess) -> bool:
    """Set ``metadata_props["edgeopt.preprocess"]`` of the ONNX file to the recipe's JSON,
    keeping every other property; the file is rewritten atomically (weights in external data
    files are left where they are). False, and the file untouched, when it already holds
    that very recipe. The file's bytes (and so its SHA-256) change: stamp a copy that is
    handed out, never a file whose digest a study recorded."""
    import onnx

    path = Path(onnx_path)
    model = onnx.load(str(path), load_external_data=False)
    value = recipe_json(recipe)
    entries = [p for p in model.metadata_props if p.key == METADATA_KEY]
    if len(entries) == 1 and entries[0].value == value:
        return False
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    for key, val in [*kept, (METADATA_KEY, value)]:
        model.metadata_props.add(key=key, value=val)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        onnx.save(model, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def read_recipe(onnx_path: str | Path) -> Preprocess | None:
    """The recipe stamped into the ONNX file, or None when it carries none. ConfigError for a
    stamp that is not a recipe (edited by hand, or from a newer edgeopt)."""
    import onnx

    path = Path(onnx_path)
    model = onnx.load(str(path), load_external_data=False)
    values = [p.value for p in model.metadata_props if p.key == METADATA_KEY]
    if not values:
        return None
    try:
        return Preprocess.from_dict(json.loads(values[-1]))
    except (json.JSONDecodeError, ConfigError) as exc:
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else exc.message
        raise ConfigError(
            f"the preprocessing metadata ({METADATA_KEY}) of {path} is not a recipe: {why}",
            hint="re-export the model with edgeopt, or remove that metadata entry",
        ) from exc


def carry(onnx_path: str | Path, recipe: Mapping[str, Any] | None) -> None:
    """Stamp the ONNX file a run made with the run's recipe (``Preprocess.to_dict()``; None:
    the run's data has none, nothing happens) and write its ``X.preprocess.json``. Call
    before the file's digest is recorded: the stamp changes its bytes."""
    if recipe is None:
        return
    parsed = Preprocess.from_dict(recipe)
    stamp(onnx_path, parsed)
    write_sidecar(onnx_path, parsed)
