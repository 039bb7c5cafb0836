"""The independent PyTorch oracle of the official DMVFN and of its training loss, written from the
spec (docs/reference-dmvfn.md), for the parity tests and the benchmarks:

    from dmvfn_jax.parity import torch_dmvfn as tdm   # the network, NCHW (`TorchDMVFN`)
    from dmvfn_jax.parity import torch_losses as tl   # the Laplacian and VGG19 losses

Needs torch (installed by `make install`'s test extra); nothing else in dmvfn_jax imports these
modules, so the package itself never needs torch for them.
"""
