"""TPU chips and topologies for ahead-of-time compilation on a machine without TPUs.

libtpu (from PyPI) can describe any TPU slice and compile for it on a CPU host:
`jax.experimental.topologies.get_topology_desc` returns compile-only devices of that slice, and
a program jitted over a mesh of them lowers and compiles as it would on the pod (MaxText's
`train_compile.py` works this way). `dmvfn_jax.planning.plan` builds on this module.

libtpu is looked up, in order, at `$TPU_LIBRARY_PATH`, as the `libtpu` package (the `[tpu]`
extra, or `jax[tpu]`), and at `<venv>/libtpu/libtpu/libtpu.so` (`make plan-deps`: a pip
`--target` install that only this module looks at). Installed as a package on a machine without
TPU chips, libtpu makes every JAX process try, and fail, to start the TPU runtime (a few lines
on stderr; the devices JAX picks stay the same); the `--target` install avoids that.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
from pathlib import Path

from dmvfn_jax.errors import InputError

LIBTPU_REQUIREMENT = "libtpu==0.0.42.*"  # what jax[tpu]==0.10.2 requires (tests/test_plan.py checks)
LIBTPU_TARGET = Path(sys.prefix) / "libtpu"  # `make plan-deps` installs here


@dataclasses.dataclass(frozen=True)
class Chip:
    """Public per-chip figures (Google Cloud TPU documentation, the page cited in `source`)."""

    name: str
    device_kind: str  # jax's device_kind for it
    peak_bf16_flops: float  # FLOP/s, dense bf16 on the MXUs
    hbm_bytes: float
    hbm_bytes_per_s: float
    allreduce_bytes_per_s: float  # per chip, for the all-reduce estimate (see `source`)
    megacore: bool  # two TensorCores presented as one JAX device
    cloud_counts_cores: bool  # Cloud names (v4-8, v5p-128) count TensorCores, not chips
    source: str


GB, GIB = 1e9, 2**30
CHIPS = {
    "v4": Chip("v4", "TPU v4", 275e12, 32 * GIB, 1200 * GB, 1.1e15 / 4096, True, True,
               "cloud.google.com/tpu/docs/v4: 275 TFLOP/s (bf16), HBM2 32 GiB at 1200 GB/s; all-reduce "
               "bandwidth 1.1 PB/s per 4096-chip pod"),
    "v5e": Chip("v5e", "TPU v5 lite", 197e12, 16 * GB, 819 * GB, 51.2e12 / 256, False, False,
                "cloud.google.com/tpu/docs/v5e: 197 TFLOP/s (bf16), HBM2 16 GB at 819 GB/s; all-reduce "
                "bandwidth 51.2 TB/s per 256-chip pod"),
    "v5p": Chip("v5p", "TPU v5", 459e12, 95 * GB, 2765 * GB, 4800e9 / 8, True, True,
                "cloud.google.com/tpu/docs/v5p: 459 TFLOP/s (bf16), HBM2e 95 GB at 2765 GB/s; inter-chip "
                "interconnect 4800 Gbps"),
    "v6e": Chip("v6e", "TPU v6 lite", 918e12, 32 * GB, 1638 * GB, 102.4e12 / 256, False, False,
                "cloud.google.com/tpu/docs/v6e: 918 TFLOP/s (bf16), HBM 32 GB at 1638 GB/s; all-reduce "
                "bandwidth 102.4 TB/s per 256-chip pod"),
}
ALIASES = {"v5litepod": "v5e", "v5": "v5p", "v6": "v6e"}
# chips -> the slice shape Google Cloud gives that many chips
SHAPES_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16), 256: (16, 16)}
SHAPES_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4), 128: (4, 4, 8),
             256: (4, 8, 8), 512: (8, 8, 8), 1024: (8, 8, 16), 2048: (8, 16, 16), 4096: (16, 16, 16)}
ACCEPTED = ("libtpu topologies: v4:2x2x1, v5e:2x4, v5e:16x16, v5p:4x4x4, v6e:16x16 (generation:shape, "
            "2-D for v5e/v6e, 3-D for v4/v5p); Cloud names: v4-8, v5e-8 (or v5litepod-8), v5e-256, "
            "v5p-128, v6e-256 (v4 and v5p count TensorCores, two per chip; v5e and v6e count chips)")


@dataclasses.dataclass(frozen=True)
class Topology:
    chip: Chip
    shape: tuple[int, ...]  # chips along each axis

    @property
    def chips(self) -> int:
        return math.prod(self.shape)

    @property
    def libtpu_name(self) -> str:
        return f"{self.chip.name}:{'x'.join(map(str, self.shape))}"

    @property
    def cloud_name(self) -> str:
        n = self.chips * (2 if self.chip.cloud_counts_cores else 1)
        return f"{self.chip.name}-{n}"

    @property
    def accelerator_type(self) -> str:
        """The name libtpu reads from TPU_ACCELERATOR_TYPE (v5e is `v5litepod-N` there)."""
        return self.cloud_name.replace("v5e-", "v5litepod-")


def parse_topology(name: str) -> Topology:
    """`v5e:16x16` (libtpu's form) or `v5e-256` (Google Cloud's accelerator type) -> Topology."""
    text = name.strip().lower()
    m = re.fullmatch(r"([a-z0-9]+):(\d+(?:x\d+)+)", text)
    if m:
        gen = ALIASES.get(m.group(1), m.group(1))
        shape = tuple(int(d) for d in m.group(2).split("x"))
        if gen in CHIPS and all(d > 0 for d in shape) and len(shape) == (3 if CHIPS[gen].megacore else 2):
            return Topology(CHIPS[gen], shape)
    m = re.fullmatch(r"([a-z0-9]+)-(\d+)", text)
    if m:
        gen = ALIASES.get(m.group(1), m.group(1))
        if gen in CHIPS:
            chip, count = CHIPS[gen], int(m.group(2))
            chips = count // 2 if chip.cloud_counts_cores else count
            shapes = SHAPES_3D if chip.megacore else SHAPES_2D
            if (not chip.cloud_counts_cores or count % 2 == 0) and chips in shapes:
                return Topology(chip, shapes[chips])
    raise InputError(f"unknown TPU topology {name!r}; accepted: {ACCEPTED}")


def find_libtpu() -> str | None:
    """Path of libtpu.so, or None (see the module docstring for where it is looked up)."""
    env = os.environ.get("TPU_LIBRARY_PATH")
    if env and os.path.isfile(env):
        return env
    try:
        import libtpu  # noqa: PLC0415

        return libtpu.get_library_path()
    except ImportError:
        pass
    local = LIBTPU_TARGET / "libtpu" / "libtpu.so"
    return str(local) if local.is_file() else None


def compile_only_devices(topology: Topology) -> list:
    """The slice's devices, for compiling only (one per chip: v4 and v5p as megacore)."""
    path = find_libtpu()
    if path is None:
        raise InputError(
            f"libtpu is not installed, and planning for a TPU needs it: `make plan-deps` (pip install --target "
            f"{LIBTPU_TARGET} '{LIBTPU_REQUIREMENT}') or pip install -e '.[tpu]'"
        )
    os.environ["TPU_LIBRARY_PATH"] = path
    # No TPU here: skip the metadata-server query, say what the slice is and name a worker (libtpu
    # would print a warning for each), keep libtpu's start-up log quiet, and let several planning
    # processes load libtpu at once (its lock file guards TPU hardware, of which there is none).
    for key, value in (("TPU_SKIP_MDS_QUERY", "1"), ("TPU_ACCELERATOR_TYPE", topology.accelerator_type),
                       ("ALLOW_MULTIPLE_LIBTPU_LOAD", "1"),
                       ("TPU_WORKER_HOSTNAMES", "localhost"), ("TPU_MIN_LOG_LEVEL", "3"),
                       ("TPU_STDERR_LOG_LEVEL", "3")):
        os.environ.setdefault(key, value)
    from jax.experimental import topologies

    kwargs = {}
    if topology.chip.megacore:
        kwargs["chip_config_name"] = "megacore"
    elif topology.chips <= 8:  # v5e/v6e slices of up to 8 chips are one host (2x4: the 8-chip VM)
        kwargs["chips_per_host_bounds"] = (*topology.shape, 1)
    devices = topologies.get_topology_desc(topology_name=topology.libtpu_name, platform="tpu", **kwargs).devices
    if len(devices) != topology.chips or devices[0].device_kind != topology.chip.device_kind:
        raise RuntimeError(f"libtpu described {topology.libtpu_name} as {len(devices)} x {devices[0].device_kind!r}, "
                           f"expected one {topology.chip.device_kind!r} device per chip ({topology.chips})")
    return list(devices)


def one_chip(topology_name: str = "v5e:2x2"):
    """A sharding on the first chip of a compile-only slice, every array whole: `jax.jit(fn,
    in_shardings=it, out_shardings=it)` compiles `fn` for one TPU chip (nothing runs)."""
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    chip = compile_only_devices(parse_topology(topology_name))[0]
    return NamedSharding(Mesh(np.asarray([chip]), ("chip",)), PartitionSpec())
