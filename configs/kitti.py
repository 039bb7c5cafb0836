"""Official KITTI recipe: 9-frame windows at 832x256, random 256x256 crops, global batch 64.

Frames as the official pipeline reads them (OpenCV): BGR. Set num_train_steps for your split
size (300 epochs in the paper).
"""

from configs.common import base_config


def get_config():
    c = base_config()
    c.name = "kitti"
    c.data.source = "tfds"
    c.data.tfds_name = "dmvfn_kitti"  # python -m dmvfn_jax.data.build kitti ...; --config.data_dir=<its --data_dir>
    c.data.num_frames = 9
    c.data.height = 256
    c.data.width = 256
    c.data.channel_order = "BGR"
    return c
