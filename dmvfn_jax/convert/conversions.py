"""The conversions that `convert_weights.py` runs, as functions a notebook can call."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from flax import nnx

from dmvfn_jax import checkpoint as ckpt
from dmvfn_jax.convert import dmvfn_torch, lpips_torch, vgg_torch
from dmvfn_jax.files import sha256_of
from dmvfn_jax.losses import VGG19Features
from dmvfn_jax.models.dmvfn import DMVFN
from dmvfn_jax.checkpoint import save_dmvfn, saved_routing_options


def _model_shapes():
    return ckpt.flat_shapes(ckpt.abstract_params(lambda: DMVFN(rngs=nnx.Rngs(0))))


def convert_dmvfn(input_path, output_dir, overwrite: bool = False, channel_order: str = "BGR") -> Path:
    """Official `dmvfn_*.pkl` -> dmvfn-jax checkpoint directory (orbax params + metadata).

    Official weights were trained on BGR frames (OpenCV); `channel_order` records that so the
    Predictor can flip RGB input for the network.
    """
    from dmvfn_jax.convert.torch_io import load_state_dict

    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:  # fail before the (slow) read
        raise FileExistsError(f"{output_dir} already exists; pass --overwrite to replace it")
    input_path = Path(input_path)
    state = load_state_dict(input_path)
    params = dmvfn_torch.torch_to_jax(state, _model_shapes(), source=str(input_path))
    source = {
        "source": {"file": os.path.basename(input_path), "sha256": sha256_of(input_path)},
        "converted": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return save_dmvfn(output_dir, params, channel_order, source, overwrite=overwrite)


def export_dmvfn_to_torch(checkpoint_dir, output_path, overwrite: bool = False) -> Path:
    """dmvfn-jax checkpoint -> state dict file in the official format (`module.` keys).

    The official code loads it with `load_state_dict(..., strict=True)` after stripping the
    prefix, exactly as it loads its own releases.
    """
    from dmvfn_jax.convert.torch_io import save_state_dict

    if Path(output_path).exists() and not overwrite:
        raise FileExistsError(f"{output_path} already exists; pass --overwrite to replace it")
    params, meta = ckpt.load_checkpoint(checkpoint_dir)
    if meta.get("architecture") != dmvfn_torch.ARCHITECTURE:
        raise ckpt.CheckpointError(f"{checkpoint_dir}: architecture {meta.get('architecture')!r} is not 'dmvfn'")
    routing = saved_routing_options(meta, checkpoint_dir)
    if routing != {"routing_rescale": True, "routing_inputs": "frames"}:  # the official module's
        raise ckpt.CheckpointError(
            f"{checkpoint_dir}: its routing was trained with {routing} (config.routing), which the official code "
            "does not have: its routing module rescales its probabilities and reads the two frames, so it would "
            "switch other blocks on"
        )
    problems = ckpt.describe_mismatch(_model_shapes(), ckpt.flat_shapes(params))
    if problems:
        raise ckpt.CheckpointError(f"{checkpoint_dir}: parameters do not fit DMVFN:\n" + "\n".join(problems))
    return save_state_dict(output_path, dmvfn_torch.jax_to_torch(params), overwrite=overwrite)


def write_random_official(output_path, seed: int = 0, overwrite: bool = False) -> Path:
    """A random-weight checkpoint in the official format, for trying the tools without weights."""
    from dmvfn_jax.convert.torch_io import save_state_dict

    return save_state_dict(output_path, dmvfn_torch.random_official_state(seed), overwrite=overwrite)


def _vgg19_shapes():
    return ckpt.flat_shapes(ckpt.abstract_params(lambda: VGG19Features(rngs=nnx.Rngs(0))))


def convert_vgg19(input_path, output_dir, overwrite: bool = False) -> Path:
    """torchvision `vgg19-dcbee2f5.pth` -> checkpoint of the features the perceptual loss uses.

    Only `features[0:29]` (up to relu5_1) is kept; `features.30/32/34` and `classifier.*` are
    dropped and their names recorded in the metadata. `channel_order` is recorded as 'RGB'
    (ImageNet's), although the DMVFN loss feeds the network whatever order its frames are in.
    """
    from dmvfn_jax.convert.torch_io import load_state_dict

    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:  # fail before the (slow) read
        raise FileExistsError(f"{output_dir} already exists; pass --overwrite to replace it")
    input_path = Path(input_path)
    state = load_state_dict(input_path)
    params, dropped = vgg_torch.torch_to_jax(state, _vgg19_shapes(), source=str(input_path))
    metadata = {
        "architecture": vgg_torch.ARCHITECTURE,
        "layers": vgg_torch.LAYERS,
        "channel_order": "RGB",
        "dropped_keys": dropped,
        "source": {"file": os.path.basename(input_path), "sha256": sha256_of(input_path)},
        "converted": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return ckpt.save_checkpoint(output_dir, params, metadata, overwrite=overwrite)


def installed_lpips_linear() -> Path | None:
    """`lpips/weights/v0.1/alex.pth` of an installed `lpips` package (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / "alex.pth"
    return path if path.is_file() else None


def convert_lpips(alexnet_path, output_dir, linear_path=None, overwrite: bool = False) -> Path:
    """torchvision `alexnet-owt-7be5be79.pth` + the lpips package's `alex.pth` -> LPIPS checkpoint."""
    from dmvfn_jax.convert.torch_io import load_state_dict
    from dmvfn_jax.errors import InputError

    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} already exists; pass --overwrite to replace it")
    if linear_path is None:
        linear_path = installed_lpips_linear()
        if linear_path is None:
            raise InputError(
                "the LPIPS linear layers ship inside the `lpips` package: install it without its "
                "dependencies (pip install --no-deps lpips==0.1.4) or pass --linear PATH/TO/lpips/weights/v0.1/alex.pth"
            )
    alexnet_path, linear_path = Path(alexnet_path), Path(linear_path)
    params, dropped = lpips_torch.torch_to_jax(load_state_dict(alexnet_path), load_state_dict(linear_path),
                                               str(alexnet_path), str(linear_path))
    metadata = {
        "architecture": lpips_torch.ARCHITECTURE,
        "channel_order": "RGB",
        "dropped_keys": dropped,
        "source": {
            "alexnet": {"file": os.path.basename(alexnet_path), "sha256": sha256_of(alexnet_path)},
            "linear": {"file": os.path.basename(linear_path), "sha256": sha256_of(linear_path)},
        },
        "converted": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return ckpt.save_checkpoint(output_dir, params, metadata, overwrite=overwrite)
