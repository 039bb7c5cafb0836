"""Fine-tune converted official weights on your own videos (README, "Your own videos").

A `video_files` (or, with --config.data.tfds_name=dmvfn_clip_folder, `clip_folder`) TFDS build,
`python -m dmvfn_jax.data.build video_files --manual_dir my_videos --data_dir data/mine
--size 448x256`, read from --config.data_dir; the weights from --config.init_checkpoint
(`convert_weights.py dmvfn` output). The official weights were trained on OpenCV's BGR frames:
the data reaches the network as BGR, and a checkpoint whose metadata says otherwise is refused
(`allow_channel_order_change`). The official recipe's loss, augmentations and update rule at a
tenth of its learning rates and a short schedule: 2000 steps of 8 clips, 100 warm-up steps.
"""

from configs.common import base_config


def get_config():
    c = base_config()
    c.name = "finetune"
    c.init_checkpoint = ""  # --config.init_checkpoint=checkpoints/dmvfn_city
    c.require_init_checkpoint = True  # an empty init_checkpoint is an error, not a fresh model
    c.batch_size = 8
    c.num_train_steps = 2000
    c.warmup_steps = 100
    c.base_lr = 1e-6
    c.peak_lr = 1e-5
    c.checkpoint_every = 250
    c.image_every = 250
    c.data.source = "tfds"
    c.data.tfds_name = "dmvfn_video_files"
    c.data.split = "train"
    c.data.num_frames = 3
    c.data.height = 256  # crop; the build's frames must be at least this large
    c.data.width = 256
    c.data.channel_order = "BGR"
    return c
