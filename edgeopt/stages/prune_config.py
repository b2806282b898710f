"""What a prune config is (``PruneConfig``, ``Importance``) and the channel arithmetic it
implies: the ratio a group is pruned at (``layer_ratio``) and the channels it keeps
(``expected_channels``); see ``edgeopt.stages.prune`` for the rule and why."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from edgeopt.errors import ConfigError
from edgeopt.stages.attention import AttentionPruning
from edgeopt.stages.base import StageConfig, check_range

MAX_RATIO = 0.9


class Importance(StrEnum):
    """How channel groups are ranked: group L1/L2 weight norm, first-order Taylor, BN scale."""

    L1 = "l1"
    L2 = "l2"
    TAYLOR = "taylor"
    BN_SCALE = "bn_scale"


@dataclass(frozen=True, kw_only=True)
class PruneConfig(StageConfig):
    """Structured pruning settings.

    ``ratio``: fraction of channels removed per group (uniform) or over all groups (global),
    in [0, 0.9]; 0 leaves the model unchanged. ``iterative_steps`` prunes in that many
    increments, re-ranking importance in between. ``round_to``: kept channel counts are
    multiples of it (1 = no rounding). ``ignored_layers``: qualified module names whose
    output channels are never pruned, in addition to the model's output layer, which is
    always kept whole.

    ``attention``: what happens to the model's attention sites (``stages.attention``): left
    whole (``none``), whole heads removed (``heads``: ``ceil(head_ratio * H)`` per site) or
    that fraction of every head's dims (``head_dims``); the MLP hidden width follows
    ``ratio`` either way and the residual stream is never pruned. Attention pruning is one
    local step (no ``global_pruning``, ``iterative_steps`` 1: Torch-Pruning's global and
    iterative head arithmetic is not checked).
    """

    ratio: float = 0.0
    importance: Importance = Importance.L2
    global_pruning: bool = False
    iterative_steps: int = 1
    round_to: int = 1
    ignored_layers: tuple[str, ...] = ()
    attention: AttentionPruning = AttentionPruning.NONE
    head_ratio: float = 0.0
    depth: int = 0

    def __post_init__(self) -> None:
        self._check_types()
        check_range("prune.ratio", self.ratio, 0.0, MAX_RATIO)
        check_range("prune.head_ratio", self.head_ratio, 0.0, MAX_RATIO)
        if self.head_ratio > 0 and self.attention is AttentionPruning.NONE:
            raise ConfigError("prune.head_ratio needs prune.attention heads or head_dims")
        if self.attention is not AttentionPruning.NONE and (
            self.global_pruning or self.iterative_steps > 1
        ):
            raise ConfigError(
                "prune.attention prunes in one local step: it takes neither "
                "prune.global_pruning nor prune.iterative_steps above 1"
            )
        check_range("prune.depth", self.depth, 0)
        check_range("prune.iterative_steps", self.iterative_steps, 1, 100)
        check_range("prune.round_to", self.round_to, 1, 4096)
        if any(not isinstance(n, str) or not n for n in self.ignored_layers):
            raise ConfigError("prune.ignored_layers must be non-empty module names")

    @property
    def prunes_width(self) -> bool:
        """Whether channels are removed: a ratio above 0 or attention pruned by a head ratio
        above 0."""
        return self.ratio > 0 or (
            self.attention is not AttentionPruning.NONE and self.head_ratio > 0
        )

    @property
    def prunes(self) -> bool:
        """Whether anything is removed: channels (``prunes_width``) or blocks (``depth``)."""
        return self.prunes_width or self.depth > 0


def layer_ratio(channels: int, ratio: float, round_to: int = 1) -> float:
    """The uniform ratio a group of ``channels`` is pruned at: ``ratio``, except where the
    kept count ``int(channels * (1 - ratio))`` rounds down to 0 channels in multiples of
    ``round_to`` and the group is wider than ``round_to``: then a ratio that keeps exactly
    ``round_to`` channels (half a channel of margin against float truncation)."""
    if round_to <= 1 or channels <= round_to:
        return ratio
    keep = int(channels * (1 - ratio))
    if keep - keep % round_to > 0:
        return ratio
    return 1.0 - (round_to + 0.5) / channels


def expected_channels(channels: int, ratio: float, round_to: int = 1, steps: int = 1) -> int:
    """Channels a group of ``channels`` keeps after uniform pruning at ``ratio`` in ``steps``.

    The group's ratio is ``layer_ratio``; step ``k`` targets ``int(channels * (1 - r * k /
    steps))`` kept channels, rounded down to a multiple of ``round_to``; a step whose rounded
    target is 0 leaves the group as it is.
    """
    ratio = layer_ratio(channels, ratio, round_to)
    current = channels
    for k in range(1, steps + 1):
        step_ratio = (k / float(steps)) * ratio  # Torch-Pruning's linear scheduler, same floats
        target = int(channels * (1 - step_ratio))
        if current - target <= 0 or current <= 1:
            continue
        keep = target - target % round_to
        if keep > 0:
            current = keep
    return current
