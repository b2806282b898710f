"""Compression stages in pipeline order: prune, finetune, qat (torch phase), quantize (ONNX
phase).

``STAGES`` maps each stage's name to its instance, in pipeline order: the order of the
``register`` calls below. A new stage is one module defining it and one ``register`` line
here; the search composes whatever is registered. Heavy libraries (torch-pruning,
onnxruntime) are imported inside the stages' methods.
"""

from edgeopt.stages.base import (
    STAGES,
    ByHandBaseline,
    FailurePolicy,
    Fidelity,
    ModelFacts,
    Phase,
    ProbeInput,
    Stage,
    StageConfig,
    StageContext,
    StageOutput,
    Suggester,
    register,
)
from edgeopt.stages.finetune import FinetuneConfig, FinetuneStage
from edgeopt.stages.prune import PruneStage
from edgeopt.stages.prune_config import Importance, PruneConfig
from edgeopt.stages.qat import QatConfig, QatStage
from edgeopt.stages.quantize import QuantizeStage
from edgeopt.stages.quantize_config import CalibMethod, QType, QuantizeConfig, QuantMode

register(PruneStage())
register(FinetuneStage())
register(QatStage())
register(QuantizeStage())

__all__ = [
    "STAGES",
    "ByHandBaseline",
    "FailurePolicy",
    "Fidelity",
    "CalibMethod",
    "FinetuneConfig",
    "FinetuneStage",
    "Importance",
    "ModelFacts",
    "Phase",
    "ProbeInput",
    "PruneConfig",
    "PruneStage",
    "QatConfig",
    "QatStage",
    "QType",
    "QuantMode",
    "QuantizeConfig",
    "QuantizeStage",
    "Stage",
    "StageConfig",
    "StageContext",
    "StageOutput",
    "Suggester",
    "register",
]
