"""Official Cityscapes recipe: 30-frame clips at 1024x512, random 256x256 crops, global batch 64.

2,975 training clips, 300 epochs at batch 64 -> 13,945 batch steps, 28 updates each.
Frames as the official pipeline reads them (OpenCV): BGR.
"""

from configs.common import base_config


def get_config():
    c = base_config()
    c.name = "cityscapes"
    c.num_train_steps = 13_945
    c.data.source = "tfds"
    c.data.tfds_name = "dmvfn_cityscapes"  # python -m dmvfn_jax.data.build cityscapes ...; --config.data_dir=<its --data_dir>
    c.data.num_frames = 30
    c.data.height = 256  # crop
    c.data.width = 256
    c.data.channel_order = "BGR"
    return c
