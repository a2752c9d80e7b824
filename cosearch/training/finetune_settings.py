"""What a finetune before scoring does (``cosearch fidelity`` / ``cosearch search
--finetune-steps``): its settings and their checks, without torch, so the search's
configuration and the command line read them without loading it (``finetune`` trains)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..inputs import check_number

if TYPE_CHECKING:
    from .train import TrainConfig

#: the most finetune steps (0: none)
MAX_STEPS = 100_000

#: the finetune's constant learning rate as a fraction of the run's peak ``lr``: chosen on
#: tinyshakespeare's validation split (one supernet, 48 archs: tau 0.901 after 50 steps at
#: 0.3, 0.874 at 1.0, a difference its interval does not decide; fidelity_notes.md, twentieth
#: session); no warm-up (the weights are trained already)
LR_SCALE = 0.3


@dataclass(frozen=True)
class Finetune:
    """``steps`` of training of each arch before it is scored (0: none), at ``lr`` (None:
    ``LR_SCALE`` x the run's lr), on the batches of ``seed``."""

    steps: int = 0
    lr: float | None = None
    seed: int = 0

    def check(self) -> None:
        check_number("--finetune-steps", self.steps, low=0, high=MAX_STEPS, integer=True)
        if self.lr is not None:
            check_number("--finetune-lr", self.lr, low=0, low_open=True)

    def rate(self, cfg: TrainConfig) -> float:
        return self.lr if self.lr is not None else LR_SCALE * cfg.lr

    def key(self, cfg: TrainConfig) -> str:
        """What a cached score of a finetuned arch depends on besides the arch and weights."""
        return f"finetune{self.steps}-lr{self.rate(cfg):g}-seed{self.seed}"
