"""Training: BPR losses, negative sampling, the fit loop and checkpoints."""

from .checkpoint import load_weights, save_weights
from .losses import batch_l2, bpr_loss, l2_reg
from .loop import History, TrainConfig, fit, resolve_device, write_curves
from .sampling import UniformNegativeSampler

__all__ = ["TrainConfig", "History", "fit", "resolve_device", "write_curves", "bpr_loss", "l2_reg", "batch_l2",
           "UniformNegativeSampler", "save_weights", "load_weights"]
