"""Tiny CPU run on the bundled synthetic videos: `make demo` (a few minutes on 2 cores).

Higher learning rate and a short schedule than the official recipe, so that a model trained
from scratch beats copy-last-frame within minutes.
"""

from configs.common import base_config


def get_config():
    c = base_config()
    c.name = "demo"
    c.batch_size = 4
    c.num_train_steps = 1200
    c.warmup_steps = 100
    c.base_lr = 1e-4
    c.peak_lr = 1e-3
    c.update_mode = "per_batch"
    c.checkpoint_every = 400
    c.log_every = 50
    c.image_every = 400
    c.data.source = "synthetic"
    c.data.num_frames = 3
    c.data.height = 64
    c.data.width = 64
    c.eval.num_clips = 64
    c.eval.num_frames = 5
    c.eval.routings = ("threshold", "all")
    c.eval.save_clips = 4
    return c
