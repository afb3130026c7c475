"""The DAPO algorithm core: pure tensor math (:mod:`.functional`) and one small component per choice."""

from dapo_lab.algo import functional
from dapo_lab.algo.advantage import GroupAdvantage
from dapo_lab.algo.clip import DecoupledClip, SymmetricClip
from dapo_lab.algo.kl import KLInReward, KLLoss, NoKL
from dapo_lab.algo.loss import SeqMeanTokenMean, SeqMeanTokenSum, SeqMeanTokenSumNorm, TokenMean
from dapo_lab.algo.overlong import NoOverlong, OverlongFilter, OverlongFilterSoftPunishment, SoftOverlongPunishment
from dapo_lab.algo.sampling import DynamicSampling, KeepAll

__all__ = [
    "functional", "GroupAdvantage", "DecoupledClip", "SymmetricClip",
    "NoKL", "KLInReward", "KLLoss", "TokenMean", "SeqMeanTokenMean", "SeqMeanTokenSum", "SeqMeanTokenSumNorm",
    "NoOverlong", "OverlongFilter", "SoftOverlongPunishment", "OverlongFilterSoftPunishment",
    "KeepAll", "DynamicSampling",
]
