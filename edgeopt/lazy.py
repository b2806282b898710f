"""The one list of libraries edgeopt imports lazily, and the rule for function-local imports.

An import stays inside a function only when it is

(a) of a library in ``HEAVY`` (seconds to import, or there only with an extra);
(b) of an edgeopt module, inside ``edgeopt/cli/``: commands import what they run, so
    ``edgeopt --help`` stays fast;
(c) of an edgeopt module whose own module-level imports, followed through, load a ``HEAVY``
    library (``zoo``, ``onnx_export``, ``training.fake_quant``, ``search.study.source``);
(d) in the measure device kit (``measure.child``/``session``/``timing``/``power``), of
    anything but the standard library, numpy and the kit: the kit is copied to devices alone;
(e) one that would make ``import edgeopt.cli`` load a third-party package it does not load
    now, or one inside a ``try`` that catches ImportError (an optional package).

Every other import goes at the top of its module. ``scripts/hoist_imports.py`` moves the ones
that break the rule; ``tests/test_imports.py`` fails on any it finds. This is a list and a
rule, not a runtime lazy loader: a loader breaks ``from x import y``, confuses type checkers
and moves the place an ImportError shows up.
"""

from __future__ import annotations

HEAVY: frozenset[str] = frozenset(
    {
        "torch",
        "torchvision",
        "torch_pruning",
        "onnx",
        "onnxruntime",
        "optuna",
        "optuna_dashboard",
        "mlflow",
        "scipy",
        "sqlalchemy",
        "psycopg",
        "requests",  # mlflow's HTTP client: installed with the mlflow extra only
        "PIL",  # Pillow: the images extra, for image-folder data
        "openvino",  # the openvino extra: OpenVINO IR conversion and its CPU plugin
        "litert_torch",  # the litert extra: torch -> TFLite (imports jax, ~4 s)
        "ai_edge_litert",  # the litert extra: the LiteRT interpreter and TFLite schema
        "ai_edge_quantizer",  # the litert extra: TFLite quantization recipes
    }
)
