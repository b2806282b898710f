"""``optimize --data``: an existing path (an ``.npz``, a folder of images) or a
``module:callable`` reference to the user's Datasets (``edgeopt.data.callable``)."""

from __future__ import annotations

import os
from typing import Any

import click

from edgeopt.cli.options import Utf8Path

DATA_HELP = (
    ".npz with x_train, y_train, x_val, y_val[, x_test, y_test]; a folder of images "
    "(DIR/<class>/* or DIR/{train,val[,test]}/<class>/*); or module:callable returning "
    "(train, val[, test]) torch Datasets (runs that code; never recorded in the run)."
)


class DataArg(Utf8Path):
    """A path that must exist, unless the value holds a ``:`` and names no file: then it is
    a ``module:callable`` reference, taken as given (imported only at set-up)."""

    name = "path|module:callable"

    def __init__(self) -> None:
        super().__init__(exists=True)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = os.fsdecode(value) if isinstance(value, bytes) else str(value)
        if ":" in text and not os.path.exists(text):
            return text
        return super().convert(value, param, ctx)
