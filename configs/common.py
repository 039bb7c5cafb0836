"""Settings every config shares: the official recipe (reference-dmvfn.md, Training recipe)."""

import ml_collections

from dmvfn_jax.models.dmvfn import SCALES, WIDTHS  # the official nine blocks


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "dmvfn"
    c.seed = 1234
    c.batch_size = 64  # global: 8 per GPU x 8 GPUs, as the official README launches
    c.num_train_steps = 100_000
    # Learning rate per batch step: 1e-5 -> 1e-4 linear warm-up over 2000 steps, then cosine to 1e-5.
    c.warmup_steps = 2000
    c.base_lr = 1e-5
    c.peak_lr = 1e-4
    c.weight_decay = 1e-3  # AdamW, decoupled
    c.compute_dtype = "float32"  # or "bfloat16": convs in bf16, parameters and flows in float32
    # update_per_triplet: one AdamW update per triplet position of the clips (official: n-2 per batch)
    # per_batch: one update per batch on the mean loss over all triplets
    c.update_mode = "update_per_triplet"
    # cost_weight > 0: a compute-cost term on the blocks the routing switches on (train/step.py); 0 is
    # the official loss, bit for bit. rescale: the official routing module rescales its probabilities
    # to sum n/2 for every input (True); False keeps the sigmoid's, so the number of blocks can follow
    # the input (README, "Routing that adapts to the input"). inputs: what the routing module reads,
    # "frames" (official), "difference" (the first frame and the second minus the first) or "motion"
    # (the difference and its absolute value: `models.routing.ROUTING_INPUTS`). Trained
    # checkpoints record rescale and inputs.
    c.routing = ml_collections.ConfigDict({"estimator": "bernoulli", "temperature": 1.0,  # or "gumbel"
                                           "cost_weight": 0.0, "rescale": True, "inputs": "frames"})
    # The blocks: each one's width (nf, a multiple of 4) and scale (downsampling). The official
    # nine; fewer or narrower blocks make a smaller DMVFN for quick experiments and tests. Trained
    # checkpoints record them; an init_checkpoint must have the same.
    c.model = ml_collections.ConfigDict({"widths": WIDTHS, "scales": SCALES})
    c.vgg_checkpoint = ""  # `convert_weights.py vgg19` output; empty: Laplacian term alone
    c.init_checkpoint = ""  # start from converted weights instead of a fresh model
    # a data.channel_order other than the init_checkpoint's is refused unless this is set
    c.allow_channel_order_change = False
    c.max_bad_steps = 20  # stop after this many non-finite updates in a row
    # resuming: a config change that alters the run (dmvfn_jax/train/resume.py) is refused unless
    # accepted; an unreadable newest checkpoint is moved aside and the next older one used, unless strict
    c.accept_config_changes = False
    c.strict_resume = False
    c.checkpoint_every = 1000
    c.keep_checkpoints = 3
    c.async_checkpoints = True
    c.log_every = 50
    c.image_every = 1000
    c.data_dir = ""  # TFDS data_dir for data.source="tfds"; the clip folders for data.source="clips"
    c.data = ml_collections.ConfigDict()
    c.data.source = "synthetic"
    c.data.seed = 0
    # synthetic source only (dmvfn_jax/data/synthetic.py): velocity scale, texture wavelength
    # scale, (least, most) moving shapes, camera pan direction in degrees (None: random)
    c.data.motion = 1.0
    c.data.smoothness = 1.0
    c.data.shapes = (2, 4)
    c.data.pan_direction = ml_collections.config_dict.placeholder(float)
    # the share of training clips rendered without motion (the held-out clips all move)
    c.data.still_fraction = 0.0
    c.data.num_frames = 3
    c.data.height = 256
    c.data.width = 256
    c.data.channel_order = "RGB"  # the order the frames reach the network in (official data: BGR)
    # data.source "tfds": a TFDS build (python -m dmvfn_jax.data.build ...) read from config.data_dir
    c.data.tfds_name = ""
    c.data.split = "train"
    c.data.max_stride = 1  # temporal stride drawn from 1..min(max_stride, n // num_frames) (UCF101: 5)
    c.data.workers = 0  # input processes, tfds and clips sources (Grain mp_prefetch; 0: the training process)
    c.data.prefetch = 2  # batches the input processes load ahead of the training step, in all (workers > 0)
    # synthetic sources: at the end, num_clips held-out clips of num_frames frames (2 of context, the
    # rest predicted) scored as eval.py scores (evaluation/heldout.py); the first save_clips as pictures
    c.eval = ml_collections.ConfigDict({"num_clips": 0, "num_frames": 5, "save_clips": 0})
    return c
