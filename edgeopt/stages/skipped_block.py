"""``SkippedBlock``, what depth pruning (``prune_depth``) leaves where a block stood. A module
of its own because it subclasses ``nn.Module`` and so imports torch at its top."""

from __future__ import annotations

from typing import Any

from torch import nn


class SkippedBlock(nn.Module):
    """A removed block: returns its first input (the residual stream) unchanged, whatever
    else the forward passes it (an attention mask). ``was`` names the block's class."""

    def __init__(self, was: str = "") -> None:
        super().__init__()
        self.was = was

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """The input, unchanged."""
        return x

    def extra_repr(self) -> str:
        """``was=EncoderBlock``: what stood here."""
        return f"was={self.was}"
