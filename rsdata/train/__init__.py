"""Training the baseline dual encoder from shards (the loop; the model lives in rsdata.models)."""

from rsdata.train.trainer import TrainConfig, TrainError, train

__all__ = ["TrainConfig", "TrainError", "train"]
