"""Hidden-state distillation: the student's block outputs pulled towards the teacher's.

Logit distillation tells a pruned model only what the original concluded; matching the
residual stream after every block (TinyBERT's hidden-state loss, MiniLM's layer transfer)
also says how it got there, which is what a model with blocks removed
(``stages.prune_depth``) or narrowed has to relearn. Width pruning never touches the
residual stream (``stages.attention.residual_layers``) and depth pruning leaves the
remaining blocks at their original positions, so the student's block ``i`` is compared with
the teacher's block ``i`` as it is, without the learned projection TinyBERT needs between
different widths. Removed blocks are not compared (their output is the previous one's).

Per kept block: mean squared error over the teacher's mean square (scale-free across blocks
and models); the loss is the mean over kept blocks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from edgeopt.errors import ConfigError
from edgeopt.training.batch import Batch
from edgeopt.training.blocks import container_of, find_block_stack

if TYPE_CHECKING:
    import torch
    from torch import nn


class HiddenTransfer:
    """The (student block, teacher block) pairs of a student pruned from ``teacher``, found
    once on ``example`` (the teacher's block stack, ``training.blocks``); ConfigError when
    the teacher has no block stack or the student not the same one."""

    def __init__(self, student: nn.Module, teacher: nn.Module, example: Batch) -> None:
        stack = find_block_stack(teacher, example)
        if stack is None:
            raise ConfigError(
                "finetune.hidden_distill needs a model with a block stack (an nn.ModuleList "
                "or nn.Sequential of at least 3 same-shape blocks)",
                hint="set finetune.hidden_distill to false",
            )
        t_blocks = list(container_of(teacher, stack.name).children())
        try:
            s_blocks = list(container_of(student, stack.name).children())
        except AttributeError as exc:
            raise ConfigError(
                f"finetune.hidden_distill: the student has no {stack.name!r} like the teacher's"
            ) from exc
        if len(s_blocks) != len(t_blocks):
            raise ConfigError(
                f"finetune.hidden_distill: the student's {stack.name!r} holds "
                f"{len(s_blocks)} blocks, the teacher's {len(t_blocks)}"
            )
        # a removed block (stages.prune_depth) has no parameters: nothing to compare
        self.pairs = [
            (s, t)
            for s, t in zip(s_blocks, t_blocks, strict=True)
            if any(True for _ in s.parameters())
        ]
        self.stack = stack.name
        self._out: dict[int, Any] = {}

    @contextmanager
    def capture(self) -> Iterator[None]:
        """Within it, every forward of the student and the teacher records the paired
        blocks' outputs (for one ``loss``)."""
        self._out.clear()

        def hook(mod: nn.Module, _args: Any, out: Any) -> None:
            self._out[id(mod)] = out

        handles = [m.register_forward_hook(hook) for pair in self.pairs for m in pair]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def loss(self) -> torch.Tensor:
        """Mean over kept blocks of MSE(student, teacher) / mean(teacher²), from the outputs
        the last ``capture`` recorded; the captured outputs are then dropped."""
        import torch

        terms = []
        for s, t in self.pairs:
            got, want = self._out[id(s)], self._out[id(t)].detach()
            terms.append(((got - want) ** 2).mean() / (want**2).mean().clamp_min(1e-12))
        self._out.clear()
        return torch.stack(terms).mean()
