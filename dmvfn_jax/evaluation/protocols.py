"""The official evaluation protocols and the two evaluation modes (reference-dmvfn.md, Evaluation protocol)."""

from __future__ import annotations

from dataclasses import dataclass

from dmvfn_jax.errors import InputError


@dataclass(frozen=True)
class Protocol:
    """Context frames `context` (older, newer), then `horizon` autoregressive predictions scored
    against frames context[1]+1 .. context[1]+horizon of each clip of `split` of `tfds_name`."""

    name: str
    tfds_name: str
    split: str
    context: tuple[int, int]
    horizon: int

    @property
    def frames_needed(self) -> int:
        return self.context[1] + self.horizon + 1

    def describe(self) -> str:
        first = self.context[1] + 1
        target = f"frame {first}" if self.horizon == 1 else f"frames {first}..{first + self.horizon - 1}"
        return f"context frames {self.context[0]}, {self.context[1]}; {self.horizon} prediction(s) scored against {target}"


PROTOCOLS = {
    # Cityscapes: the official script reads 14 frames, of which frames 2..8 are used
    "cityscapes": Protocol("cityscapes", "dmvfn_cityscapes", "test", (2, 3), 5),
    "kitti": Protocol("kitti", "dmvfn_kitti", "test", (2, 3), 5),
    "davis": Protocol("davis", "dmvfn_davis", "test", (2, 3), 5),
    "vimeo": Protocol("vimeo", "dmvfn_vimeo", "test", (0, 1), 1),
}
GENERIC = {"clip_folder": "dmvfn_clip_folder", "video_files": "dmvfn_video_files"}
DATASETS = tuple(PROTOCOLS) + tuple(GENERIC)


def make_protocol(dataset: str, split: str | None = None, context: tuple[int, int] | None = None,
                  horizon: int | None = None) -> Protocol:
    """The protocol of `dataset`; generic datasets take `context` (default 0, 1) and `horizon` (default 1)."""
    if dataset in PROTOCOLS:
        p = PROTOCOLS[dataset]
        if context is not None or horizon is not None:
            raise InputError(
                f"--context/--horizon are for generic clip datasets ({', '.join(GENERIC)}); "
                f"{dataset} uses the official protocol: {p.describe()}"
            )
        return p if split is None else Protocol(p.name, p.tfds_name, split, p.context, p.horizon)
    if dataset not in GENERIC:
        raise InputError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    context = (0, 1) if context is None else tuple(int(c) for c in context)
    horizon = 1 if horizon is None else int(horizon)
    if len(context) != 2 or context[0] < 0 or context[1] <= context[0]:
        raise InputError(f"--context needs two frame indices, older first, e.g. 2,3; got {context}")
    if horizon < 1:
        raise InputError(f"--horizon must be >= 1, got {horizon}")
    return Protocol(dataset, GENERIC[dataset], split or "test", context, horizon)


@dataclass(frozen=True)
class Mode:
    """How predictions are made and scored."""

    name: str
    metric_order: str  # channel order of the images handed to the metrics
    routing: str  # "threshold" (deterministic) or "sample" (Bernoulli with `seed`)
    first_decides: bool  # batch element 0's gates decide for the batch
    empty: str  # what a sample gets when no block runs: "merge" or "img0"
    seed: int

    def describe(self) -> str:
        if self.name == "official":
            return (f"official: metrics fed BGR, Bernoulli routing (JAX PRNG seeded {self.seed}), "
                    "batch element 0's gates decide, img0 returned when no block runs")
        return "clean: metrics fed RGB, deterministic threshold routing (v >= 0.5), per-sample gates"


MODES = {
    "clean": Mode("clean", "RGB", "threshold", False, "merge", 0),
    "official": Mode("official", "BGR", "sample", True, "img0", 1234),
}
