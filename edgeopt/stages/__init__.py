"""Compression stages in pipeline order: prune, finetune (torch phase), quantize (ONNX phase).

``STAGES`` maps each stage's name to its instance, in that order. Heavy libraries
(torch-pruning, onnxruntime) are imported inside the stages' methods.
"""

from edgeopt.stages.base import (
    STAGES,
    Phase,
    Stage,
    StageConfig,
    StageContext,
    Suggester,
)
from edgeopt.stages.finetune import FinetuneConfig, FinetuneStage
from edgeopt.stages.prune import Importance, PruneConfig, PruneStage
from edgeopt.stages.quantize import CalibMethod, QType, QuantizeConfig, QuantizeStage, QuantMode

PIPELINE_ORDER = ("prune", "finetune", "quantize")
_registered = dict(STAGES)
STAGES.clear()
STAGES.update({n: _registered[n] for n in PIPELINE_ORDER if n in _registered})

__all__ = [
    "PIPELINE_ORDER",
    "STAGES",
    "CalibMethod",
    "FinetuneConfig",
    "FinetuneStage",
    "Importance",
    "Phase",
    "PruneConfig",
    "PruneStage",
    "QType",
    "QuantMode",
    "QuantizeConfig",
    "QuantizeStage",
    "Stage",
    "StageConfig",
    "StageContext",
    "Suggester",
]
