"""The trainer: the Lightning-free DAPO step (:class:`DAPOLearner`) and the thin LightningModule around it
(:class:`DAPOModule`), with what they share — groups and batches, teacher-forced log-probs, the prompt stream,
settings, the lr schedule, metric reductions, evaluation, collectives and the optimization seam."""

from dapo_lab.trainer.learner import DAPOLearner
from dapo_lab.trainer.module import DAPOModule
from dapo_lab.trainer.optimization import Optimization, PlainOptimization
from dapo_lab.trainer.settings import BatchSettings, EvalSettings, GenerationSettings, OptimSettings, RolloutCorrection

__all__ = ["DAPOLearner", "DAPOModule", "Optimization", "PlainOptimization", "BatchSettings", "EvalSettings",
           "GenerationSettings", "OptimSettings", "RolloutCorrection"]
