"""Build a DMVFN TFDS dataset from its manual directory (what `tfds build` does, plus --skip-bad).

    python -m dmvfn_jax.data.build DATASET --manual_dir DIR --data_dir OUT [--skip-bad]
                                   [--min-frames N] [--size WxH] [--overwrite]

DATASET is one of cityscapes, kitti, vimeo, davis, ucf101, clip_folder, video_files (the
builders of `tfds_builders.py`; `--help` lists what each manual directory holds). The build is
written to OUT/dmvfn_<DATASET>/<version>/ as ArrayRecord; train with
`--config.data_dir=OUT`. TFDS writes into a temporary folder and renames it when complete, so
an interrupted or failed build never leaves a half-written dataset in place of a good one; a
finished build is reused unless `--overwrite`.

A bad clip (a frame that does not decode, frames of different sizes, a clip shorter than the
protocol needs, a missing frame) stops the build with an error naming the clip and the file;
with `--skip-bad` it is skipped and counted in the summary. `--size WxH` (clip_folder and
video_files) resizes every frame on build as `prepare` does, so that videos of mixed sizes become
one uniform dataset; without it every clip keeps its own size. A finished build at another size
is refused rather than reused (`--overwrite` rebuilds). Needs no TensorFlow. `tfds build
--imports dmvfn_jax.data.tfds_builders dmvfn_<DATASET> --manual_dir DIR --data_dir OUT` builds
the same dataset (the `tfds` command itself needs tensorflow and apache-beam: the
`tfds-cli` extra).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from dmvfn_jax.errors import InputError, run_command


def build(dataset: str, manual_dir, data_dir, skip_bad: bool = False, min_frames: int | None = None,
          overwrite: bool = False, size: tuple[int, int] | None = None) -> dict:
    """Builds (or reuses) one dataset; returns {"path", "splits": {name: count}, "skipped": {...},
    "size": [width, height] or None}. `size` (width, height) resizes every frame (generic builders)."""
    import tensorflow_datasets as tfds

    from dmvfn_jax.data import tfds_builders

    if dataset not in tfds_builders.BUILDERS:
        raise InputError(f"unknown dataset {dataset!r}; choose from {', '.join(tfds_builders.BUILDERS)}")
    manual_dir = Path(manual_dir).expanduser()
    if not manual_dir.is_dir():
        raise InputError(f"--manual_dir {manual_dir}: no such folder")
    if min_frames is not None and min_frames < 3:
        raise InputError(f"--min-frames must be >= 3 (a triplet), got {min_frames}")
    cls = tfds_builders.BUILDERS[dataset]
    builder = cls(data_dir=str(Path(data_dir).expanduser()), skip_bad=skip_bad, min_frames=min_frames, size=size)
    if not overwrite:
        _check_reuse(Path(builder.data_path), size)
    mode = tfds.download.GenerateMode.FORCE_REDOWNLOAD if overwrite else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    try:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir), download_mode=mode)
        )
    except AssertionError as e:  # TFDS refuses a split that yields nothing: every clip of it was bad
        if "No examples were yielded" not in str(e):
            raise
        split = builder.current_split
        bad = builder.skipped.get(split, [])
        raise InputError(
            f"{manual_dir}: every clip of split {split!r} was bad and skipped ({len(bad)}); first: "
            f"{bad[0][1] if bad else '?'}"
        ) from None
    return {
        "path": str(builder.data_path),
        "splits": {name: int(info.num_examples) for name, info in builder.info.splits.items()},
        "skipped": {split: [clip for clip, _ in bad] for split, bad in builder.skipped.items() if bad},
        "size": None if size is None else list(size),
    }


def _describe_size(size) -> str:
    return "the clips' own sizes" if size is None else f"{size[0]}x{size[1]}"


def _check_reuse(path: Path, size) -> None:
    """A finished build at `path` is reused only if it was built at the same `size`."""
    if not (path / "dataset_info.json").is_file():
        return
    meta_file = path / "metadata.json"
    try:
        built = json.loads(meta_file.read_text()).get("size") if meta_file.is_file() else None
    except (OSError, ValueError) as e:
        raise InputError(f"{meta_file}: unreadable ({e}); pass --overwrite to rebuild") from None
    want = None if size is None else list(size)
    if built != want:
        raise InputError(
            f"{path} holds a build at {_describe_size(built)}, not {_describe_size(want)}: pass --overwrite "
            "to rebuild it, or another --data_dir"
        )


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    from dmvfn_jax.data import tfds_builders

    lines = [f"{k}: {cls.__doc__.splitlines()[0]}" for k, cls in tfds_builders.BUILDERS.items()]
    p = argparse.ArgumentParser(
        prog=prog or "python -m dmvfn_jax.data.build",
        description="Build a DMVFN TFDS dataset (ArrayRecord) from its manual directory.",
        epilog="datasets:\n  " + "\n  ".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dataset", choices=sorted(tfds_builders.BUILDERS))
    p.add_argument("--manual_dir", "--manual-dir", required=True, help="the downloaded (or prepared) files")
    p.add_argument("--data_dir", "--data-dir", required=True, help="where TFDS builds go (config.data_dir)")
    p.add_argument("--skip-bad", action="store_true", help="skip and count bad clips instead of stopping")
    p.add_argument("--min-frames", type=int, default=None, help="require clips of at least N frames")
    p.add_argument("--size", default=None, metavar="WxH",
                   help="clip_folder, video_files: resize every frame to WIDTHxHEIGHT (e.g. 448x256)")
    p.add_argument("--overwrite", action="store_true", help="rebuild even if a finished build exists")
    return p


def main(argv=None, prog: str | None = None) -> int:
    from dmvfn_jax.extras import require

    # the parser lists the builders, which import TFDS: a missing extra is one line before it
    name = prog or "python -m dmvfn_jax.data.build"
    if run_command(name, lambda: require("data", "building TFDS datasets")):
        return 1
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def body():
        from dmvfn_jax.image_io import parse_size

        size = None if args.size is None else parse_size(args.size)
        summary = build(args.dataset, args.manual_dir, args.data_dir, args.skip_bad, args.min_frames, args.overwrite,
                        size)
        counts = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
        skipped = sum(len(v) for v in summary["skipped"].values())
        print(f"built {summary['path']}: {counts} clips at {_describe_size(summary['size'])}"
              + (f"; skipped {skipped} bad clip(s)" if skipped else ""))
        print(json.dumps(summary))

    return run_command(name, body)


if __name__ == "__main__":
    sys.exit(main())
