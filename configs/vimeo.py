"""Official Vimeo-90K recipe: a random triplet of each septuplet, random 224x224 crops, global batch 64.

Trains from the `train` split of `python -m dmvfn_jax.data.build vimeo` (vimeo_septuplet with
sep_trainlist.txt); one update per batch (a triplet gives one). Frames BGR as OpenCV reads them.
"""

from configs.common import base_config


def get_config():
    c = base_config()
    c.name = "vimeo"
    c.data.source = "tfds"
    c.data.tfds_name = "dmvfn_vimeo"  # python -m dmvfn_jax.data.build vimeo ...; --config.data_dir=<its --data_dir>
    c.data.num_frames = 3
    c.data.height = 224  # crop
    c.data.width = 224
    c.data.channel_order = "BGR"
    return c
