"""Checkpoint conversion between the official PyTorch releases and dmvfn-jax."""

from dmvfn_jax.convert.dmvfn_torch import (
    ConversionError,
    jax_to_torch,
    key_table,
    random_official_state,
    torch_to_jax,
)
from dmvfn_jax.convert.conversions import (
    convert_dmvfn,
    convert_vgg19,
    export_dmvfn_to_torch,
    write_random_official,
)

__all__ = [
    "ConversionError",
    "convert_dmvfn",
    "convert_vgg19",
    "export_dmvfn_to_torch",
    "write_random_official",
    "jax_to_torch",
    "key_table",
    "random_official_state",
    "torch_to_jax",
]
