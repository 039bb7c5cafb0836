"""Official UCF101 recipe (the weights used for DAVIS and Vimeo): 10 frames at a random temporal
stride 1..min(5, n/10), random 256x256 crops, global batch 64. Frames BGR as OpenCV reads them.
"""

from configs.common import base_config


def get_config():
    c = base_config()
    c.name = "ucf101"
    c.data.source = "tfds"
    c.data.tfds_name = "dmvfn_ucf101"  # python -m dmvfn_jax.data.build ucf101 ...; --config.data_dir=<its --data_dir>
    c.data.num_frames = 10
    c.data.max_stride = 5
    c.data.height = 256
    c.data.width = 256
    c.data.channel_order = "BGR"
    return c
