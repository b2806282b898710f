"""Knowledge distillation (Hinton et al. 2015): the soft-target loss and the teacher's logits,
cached across the candidates a trial child distils from one teacher."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from edgeopt.training.batch import Batch
from edgeopt.training.evaluate import predict
from edgeopt.training.resume import module_digest

if TYPE_CHECKING:
    import torch
    from torch import nn


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, batch mean."""
    from torch.nn import functional as F

    t = temperature
    return (t * t) * F.kl_div(
        F.log_softmax(student / t, dim=1),
        F.log_softmax(teacher / t, dim=1),
        log_target=True,
        reduction="batchmean",
    )


_LOGITS: dict[str, torch.Tensor] = {}
_LOGITS_KEPT = 2


def teacher_logits(teacher: nn.Module, x: Batch) -> torch.Tensor:
    """The teacher's logits for ``x`` (eval mode, in batches; a tuple for a multi-input
    model), remembered across calls in this process by the teacher's weights and the inputs
    (every input's dtype, shape and bytes): a persistent trial child distils many candidates
    from the same teacher on the same un-augmented inputs."""
    h = hashlib.sha256()
    module_digest(h, teacher)
    for t in x if isinstance(x, tuple) else (x,):
        h.update(f"{tuple(t.shape)}{t.dtype if isinstance(x, tuple) else ''}".encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    key = h.hexdigest()
    if key not in _LOGITS:
        while len(_LOGITS) >= _LOGITS_KEPT:
            _LOGITS.pop(next(iter(_LOGITS)))
        _LOGITS[key] = predict(teacher, x)
    return _LOGITS[key]
