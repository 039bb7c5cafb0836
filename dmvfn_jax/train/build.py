"""What a training config builds, checked before anything compiles: the model (fresh, from
`init_checkpoint`, or the architecture a resumed run restores into), its blocks and routing options,
the VGG19 of the perceptual term, and the config's checks (`validate_config`). `plan.py` imports
this module alone."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
from flax import nnx

from dmvfn_jax import checkpoint as ckpt
from dmvfn_jax.errors import InputError
from dmvfn_jax.losses import check_pyramid_size
from dmvfn_jax.models.dmvfn import DMVFN, SCALES, WIDTHS
from dmvfn_jax.models.routing import ROUTING_INPUTS
from dmvfn_jax.train import step as step_lib

log = logging.getLogger("dmvfn_jax")


def build_model(config, resuming: bool = False) -> DMVFN:
    """A fresh DMVFN, or the weights of `config.init_checkpoint` (e.g. converted official ones).
    `resuming`: the weights come from the run's checkpoint, so `init_checkpoint` is not read."""
    dtype = {"float32": None, "bfloat16": jnp.bfloat16}[config.get("compute_dtype", "float32")]
    order = config.data.channel_order
    blocks = model_blocks(config)
    options = dict(dtype=dtype, **routing_options(config), **blocks)
    if resuming:
        log.info("resuming: the weights come from the run's checkpoint%s; frames reach the network as %s",
                 " (init_checkpoint is not read)" if config.get("init_checkpoint") else "", order)
        return DMVFN(rngs=nnx.Rngs(jax.random.key(config.seed, impl="rbg")), **options)
    if config.get("require_init_checkpoint") and not config.get("init_checkpoint"):
        raise InputError(f"config {config.name!r} fine-tunes existing weights: pass --config.init_checkpoint=DIR "
                         "(a `convert_weights.py dmvfn` output or a trained run's model/)")
    if config.get("init_checkpoint"):  # no random init to throw away
        params, meta = ckpt.load_checkpoint(config.init_checkpoint)
        if meta["channel_order"] != order:
            if not config.get("allow_channel_order_change", False):
                raise InputError(
                    f"init_checkpoint {config.init_checkpoint} was trained on {meta['channel_order']} frames, but "
                    f"config.data.channel_order is {order}: fine-tuning on swapped channels starts from a worse "
                    f"model. Pass --config.data.channel_order={meta['channel_order']}, or "
                    "--config.allow_channel_order_change=True to retrain it on purpose"
                )
            log.warning("init_checkpoint %s was trained on %s frames; training it on %s frames "
                        "(allow_channel_order_change)", config.init_checkpoint, meta["channel_order"], order)
        saved = {k: tuple(meta.get(k, default)) for k, default in (("widths", WIDTHS), ("scales", SCALES))}
        if saved != blocks:
            raise InputError(
                f"init_checkpoint {config.init_checkpoint} has blocks of widths {list(saved['widths'])} at scales "
                f"{list(saved['scales'])}, but config.model asks for widths {list(blocks['widths'])} at scales "
                f"{list(blocks['scales'])}: set config.model to the checkpoint's, or leave init_checkpoint empty"
            )
        log.info("initialising from %s (trained on %s frames); frames reach the network as %s",
                 config.init_checkpoint, meta["channel_order"], order)
        saved_routing = ckpt.saved_routing_options(meta, config.init_checkpoint)
        if saved_routing != {k: options[k] for k in saved_routing}:
            log.info("the routing of %s was trained with %s; this run trains it with %s (config.routing)",
                     config.init_checkpoint, saved_routing, {k: options[k] for k in saved_routing})
        return ckpt.build_with_params(lambda: DMVFN(rngs=nnx.Rngs(0), **options), params,
                                      config.init_checkpoint)
    log.info("a fresh model%s; frames reach the network as %s (config.data.channel_order)",
             "" if blocks == {"widths": WIDTHS, "scales": SCALES} else
             f" of {len(blocks['widths'])} blocks (widths {list(blocks['widths'])}, scales {list(blocks['scales'])})",
             order)
    # The 'rbg' PRNG initialises the 240 parameters several times faster than threefry on CPU.
    return DMVFN(rngs=nnx.Rngs(jax.random.key(config.seed, impl="rbg")), **options)


def model_blocks(config) -> dict:
    """`{"widths": ..., "scales": ...}` of `config.model` (the official nine blocks where a config
    has none), checked: one scale per width, widths positive multiples of 4, scales 1, 2 or 4 (the
    official ones)."""
    model = config.get("model") or {}
    widths = tuple(int(w) for w in model.get("widths", WIDTHS))
    scales = tuple(int(s) for s in model.get("scales", SCALES))
    if not widths or len(widths) != len(scales):
        raise InputError(f"config.model.widths {list(widths)} and config.model.scales {list(scales)} must be "
                         "non-empty and of one length (one width and one scale per block)")
    if any(w <= 0 or w % 4 for w in widths):
        raise InputError(f"config.model.widths {list(widths)}: each must be a positive multiple of 4")
    if any(s not in (1, 2, 4) for s in scales):
        raise InputError(f"config.model.scales {list(scales)}: each must be 1, 2 or 4")
    return {"widths": widths, "scales": scales}


def routing_options(config) -> dict:
    """The routing module's options of `config.routing`, as `DMVFN(**...)` takes them (the official
    ones where a config has none): `rescale`, the official rescaling of v to sum n/2 (True) or the
    sigmoid's v as it is; `inputs`, what the module reads (`models.routing.ROUTING_INPUTS`)."""
    rescale = config.routing.get("rescale", True)
    inputs = config.routing.get("inputs", "frames")
    if not isinstance(rescale, bool):
        raise InputError(f"config.routing.rescale must be True or False, got {rescale!r}")
    if inputs not in ROUTING_INPUTS:
        raise InputError(f"config.routing.inputs must be one of {ROUTING_INPUTS}, got {inputs!r}")
    return {"routing_rescale": rescale, "routing_inputs": inputs}


def build_vgg(config):
    if not config.get("vgg_checkpoint"):
        log.info("no VGG19 weights (config.vgg_checkpoint is empty): training on the Laplacian term alone")
        return None
    from dmvfn_jax.losses import load_vgg19

    log.info("perceptual loss with VGG19 features from %s", config.vgg_checkpoint)
    return load_vgg19(config.vgg_checkpoint)


def validate_config(config) -> None:
    """Clear errors for settings that would fail deep inside XLA."""
    if config.num_train_steps <= config.warmup_steps:
        raise InputError(f"num_train_steps ({config.num_train_steps}) must exceed warmup_steps ({config.warmup_steps})")
    if config.data.num_frames < 3:
        raise InputError(f"data.num_frames must be >= 3 (a triplet), got {config.data.num_frames}")
    try:
        check_pyramid_size((1, config.data.height, config.data.width, 3), levels=5)
    except ValueError as e:
        raise InputError(f"data.height x data.width = {config.data.height}x{config.data.width}: {e}") from e
    if config.update_mode not in step_lib.UPDATE_MODES:
        raise InputError(f"update_mode must be one of {step_lib.UPDATE_MODES}, got {config.update_mode!r}")
    if config.get("compute_dtype", "float32") not in ("float32", "bfloat16"):
        raise InputError(f"compute_dtype must be 'float32' or 'bfloat16', got {config.compute_dtype!r}")
    if config.data.channel_order not in ckpt.CHANNEL_ORDERS:
        raise InputError(f"data.channel_order must be one of {ckpt.CHANNEL_ORDERS}")
    model_blocks(config)
