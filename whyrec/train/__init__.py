"""Training: the trainer and its objectives and callbacks, losses, negative sampling, checkpoints."""

from .callbacks import Callback, Checkpoint, Curves, EarlyStopping, Progress, write_curves
from .checkpoint import load_weights, save_weights
from .losses import batch_l2, bpr_loss, l2_reg
from .loop import BPR, History, Objective, TrainConfig, Trainer, fit, resolve_device
from .sampling import UniformNegativeSampler

__all__ = ["TrainConfig", "History", "Trainer", "Objective", "BPR", "fit", "Callback", "EarlyStopping", "Checkpoint",
           "Progress", "Curves", "resolve_device", "write_curves", "bpr_loss", "l2_reg", "batch_l2",
           "UniformNegativeSampler", "save_weights", "load_weights"]
