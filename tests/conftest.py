"""Shared fixtures: the PyTorch oracle with random weights, the same weights in JAX, real frames."""

from __future__ import annotations

import os
import sys

# XLA's CPU settings for the suite, set before JAX starts its CPU backend (the commands the tests
# start inherit them; tests/scripts/fast_xla.py): by default LLVM at level 1, which compiles the
# nine's step 5-25% faster and its threefry initialisers 3x, and runs within noise to a fifth
# slower (BENCHMARKS.md, Decisions, "XLA's CPU settings for the tests"). DMVFN_JAX_TEST_XLA=fast: LLVM's cheap settings (compiles ~38% faster, runs
# 1.5-2.4x slower; in a full `make test` the tests that run many steps became several times slower,
# more than the compiles saved), useful when iterating on compile-bound tests; =default: XLA's own.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "scripts"))
from fast_xla import LEVELS, xla_flags  # noqa: E402
from small_model import SMALL_MODEL, SMALL_MODEL_FLAGS  # noqa: E402

_XLA = os.environ.get("DMVFN_JAX_TEST_XLA", "suite")
if _XLA not in LEVELS:
    raise SystemExit(f"DMVFN_JAX_TEST_XLA must be one of {', '.join(LEVELS)}, got {_XLA!r}")
os.environ["XLA_FLAGS"] = xla_flags(level=_XLA)

import atexit  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from flax import nnx  # noqa: E402

from dmvfn_jax import checkpoint as ckpt  # noqa: E402
from dmvfn_jax.compile_cache import enable_compilation_cache  # noqa: E402
from dmvfn_jax.convert import dmvfn_torch, lpips_torch  # noqa: E402
from dmvfn_jax.models import DMVFN  # noqa: E402
from dmvfn_jax.parity import torch_dmvfn as tdm  # noqa: E402  (the PyTorch oracle)

REPO = Path(__file__).resolve().parents[1]
# One persistent compilation cache for the whole session, in a temporary folder removed at exit:
# the tests and the commands they start (train.py, eval.py, predict) compile many identical
# programs (a training step takes ~50 s to compile here), and none of them writes ~/.cache.
# DMVFN_JAX_TEST_CACHE=off compiles everything afresh; tests of the cache itself use their own folders.
_SETTING = os.environ.get("DMVFN_JAX_TEST_CACHE", "")
if _SETTING.lower() in ("off", "0", "false", "none"):
    os.environ["DMVFN_JAX_CACHE"] = "off"
else:
    _CACHE = Path(_SETTING) if _SETTING else Path(tempfile.mkdtemp(prefix="dmvfn_jax_test_xla_"))
    if not _SETTING:  # made here: removed at exit, and handed to pytest-xdist's workers (started later)
        atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
        os.environ["DMVFN_JAX_TEST_CACHE"] = str(_CACHE)
    os.environ["DMVFN_JAX_CACHE"] = str(_CACHE)
    # Several processes read and write the cache at once (xdist workers, the commands the tests
    # start): a size limit turns on JAX's file lock around each entry's read and write, so that
    # no process reads an entry another is still writing. 1 TiB: nothing is ever evicted.
    os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"] = str(2**40)
    jax.config.update("jax_compilation_cache_max_size", 2**40)
    # This process stores only its own compilations of 1 s or more: its many small eager ops are
    # seldom read again, and with the size limit every write scans the folder (BENCHMARKS.md,
    # Decisions, "cache writes"); the commands run in-process keep this threshold, those it starts
    # store everything (they gain from their small programs: a fresh model loads in 2 s, compiles in 10).
    enable_compilation_cache(_CACHE, min_compile_seconds=1.0)
# The real video frames (../shared/data/real beside the repository, never copied into it);
# DMVFN_JAX_REAL_DATA points elsewhere.
REAL_DATA = Path(os.environ.get("DMVFN_JAX_REAL_DATA") or REPO.parent / "shared" / "data" / "real")

torch.set_num_threads(2)


def default_xla_env() -> dict:
    """The environment at XLA's own settings (without the suite's LLVM level or cheap settings): for
    programs whose figures are the compiler's own (the TPU plan's memory and collectives)."""
    return {**os.environ, "XLA_FLAGS": xla_flags(level="default")}


# The test files' shares of the suite's time, in seconds (the sums of their tests' `--durations=0`
# under `make test`'s workers, 2026-12-06, the run of d7ad1ed: 754 s of pytest; test_grid.py, new on
# 2026-12-07, from the run of f7f566b).
# pytest-xdist's `--dist loadscope` hands each worker a whole file at a time, in the order collected:
# the longest first, so that the run does not end with one worker still on a long file and the other
# idle (longest processing time first). Unlisted files follow, as collected; the order changes no result.
FILE_SECONDS = {"test_eval.py": 144, "test_readme.py": 133, "test_training.py": 124, "test_faults.py": 114,
                "test_pod_faults.py": 102, "test_plan.py": 82, "test_model_parity.py": 72, "test_inference.py": 72,
                "test_export.py": 61, "test_tpu_warp.py": 58, "test_metrics.py": 57, "test_data_parallel.py": 54,
                "test_conv_forms.py": 53, "test_grid.py": 33, "test_routing.py": 48, "test_train_datasets.py": 46,
                "test_ops_parity.py": 33, "test_multiprocess.py": 27, "test_convert.py": 25}


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 0))  # stable: within a file, as written


@pytest.fixture(autouse=True)
def highest_precision(request):
    """Every comparison runs at float32 with full-precision matmuls/convs. A test marked
    `command_precision` runs at JAX's default precision instead, as the commands the tests start do:
    on CPU the values are the same (float32 either way), and its in-process training compiles the
    very program `train.py` compiles, which the compilation cache then holds once for both."""
    if request.node.get_closest_marker("command_precision"):
        yield
        return
    with jax.default_matmul_precision("highest"):
        yield


@pytest.fixture(scope="session")
def real_data() -> Path:
    assert REAL_DATA.is_dir(), f"the shared real frames are expected at {REAL_DATA}"
    return REAL_DATA


@pytest.fixture(scope="session")
def torch_model():
    return tdm.randomize_(tdm.TorchDMVFN(), seed=1).eval()


def model_shapes():
    return ckpt.flat_shapes(ckpt.abstract_params(lambda: DMVFN(rngs=nnx.Rngs(0))))


def jax_model_from_state(state: dict[str, np.ndarray]) -> DMVFN:
    """A JAX DMVFN carrying an official-format state dict, through the converter's table."""
    params = dmvfn_torch.torch_to_jax(state, model_shapes())
    return ckpt.build_with_params(lambda: DMVFN(rngs=nnx.Rngs(0)), params)


@pytest.fixture(scope="session")
def jax_model(torch_model) -> DMVFN:
    state = {k: v.numpy() for k, v in tdm.official_state_dict(torch_model).items()}
    return jax_model_from_state(state)


@pytest.fixture(scope="session")
def official_pkl(tmp_path_factory, torch_model) -> Path:
    """The oracle's random weights saved exactly as an official release is (`module.` keys)."""
    path = tmp_path_factory.mktemp("official") / "dmvfn_random.pkl"
    torch.save(tdm.official_state_dict(torch_model), path)
    return path


@pytest.fixture(scope="session")
def converted_dir(tmp_path_factory, official_pkl) -> Path:
    from dmvfn_jax.convert import convert_dmvfn

    return convert_dmvfn(official_pkl, tmp_path_factory.mktemp("converted") / "ckpt")


def small_dmvfn(seed: int = 0) -> DMVFN:
    """The suite's small model (tests/scripts/small_model.py) with fresh random weights, drawn as
    train.py draws them (an `rbg` key): in a fresh process the default key's initialisers compile
    about three times as long as the rbg ones (BENCHMARKS.md, Decisions, "rbg key")."""
    return DMVFN(rngs=nnx.Rngs(jax.random.key(seed, impl="rbg")), **SMALL_MODEL)


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory) -> Path:
    """An inference checkpoint of the suite's small model (tests/scripts/small_model.py) with random
    weights and the official weights' BGR order: for the tests of commands and reports whose
    point is not the model (the converted nine are `converted_dir`)."""
    from dmvfn_jax.checkpoint import save_dmvfn

    return save_dmvfn(tmp_path_factory.mktemp("small") / "ckpt", ckpt.model_params(small_dmvfn(3)), "BGR", **SMALL_MODEL)


def model_params(path) -> list:
    """The parameter arrays of an inference checkpoint, in a fixed order."""
    params, _ = ckpt.load_checkpoint(path)
    return jax.tree.leaves(params)


def free_port() -> int:
    """A TCP port free on localhost now: the coordinator's of a multi-process test run."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, **popen_kwargs) -> subprocess.Popen:
    """A command started in the background, its output captured as text: the tests run commands
    that do not depend on each other side by side (one per core; XLA compiles on one)."""
    return subprocess.Popen(cmd, **{"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **popen_kwargs})


def finish(proc: subprocess.Popen, timeout: float = 900) -> subprocess.CompletedProcess:
    """Waits for a `start`ed command; what `subprocess.run` would have returned."""
    stdout, stderr = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


# The official recipes' training step (one update per triplet, Laplacian loss) shrunk for a CPU:
# 2 clips of 4 frames at 64x64. The tests that train a recipe from real frames (Cityscapes from clip
# folders or a TFDS build) share this one program of the small model (`cityscapes_train_cmd`)
# through the compilation cache, as long as they all train at these shapes; the README's
# fine-tuning on your own videos trains the official blocks at the same shapes.
SMALL_RECIPE_STEP = ("--config.data.num_frames=4", "--config.data.height=64", "--config.data.width=64",
                     "--config.batch_size=2")


def demo_train_cmd(workdir, *flags, small: bool = True) -> list[str]:
    """`train.py --config configs/demo.py` with `flags`, of the suite's small model
    (tests/scripts/small_model.py) unless `small=False` asks for the official nine."""
    return [sys.executable, str(REPO / "train.py"), "--config", str(REPO / "configs/demo.py"),
            "--workdir", str(workdir), *(SMALL_MODEL_FLAGS if small else ()), *flags]


def cityscapes_train_cmd(workdir, data_dir, *extra) -> list[str]:
    """`train.py --config configs/cityscapes.py` at the `SMALL_RECIPE_STEP` shapes, of the suite's
    small model (tests/scripts/small_model.py: the data is the point)."""
    return [sys.executable, str(REPO / "train.py"), "--config", str(REPO / "configs/cityscapes.py"),
            "--workdir", str(workdir), f"--config.data_dir={data_dir}", *SMALL_RECIPE_STEP, *SMALL_MODEL_FLAGS,
            "--config.warmup_steps=1", "--config.log_every=1", *extra]


def kill_at_checkpoint(cmd: list[str], checkpoint: Path, timeout: float = 600) -> None:
    """Starts a training command and SIGKILLs it as soon as `checkpoint` (a step folder, which
    orbax renames into place when complete) exists; fails if it ends or times out first."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    try:
        while not checkpoint.is_dir():
            assert proc.poll() is None and time.time() < deadline, f"no checkpoint {checkpoint}"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def to_nchw(x) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def to_nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


def random_frames(seed: int, b: int, h: int, w: int):
    rng = np.random.default_rng(seed)
    return rng.random((b, h, w, 3), dtype=np.float32), rng.random((b, h, w, 3), dtype=np.float32)


@pytest.fixture(scope="session")
def cityscapes_prepared(tmp_path_factory, real_data) -> Path:
    """The real 30-frame Cityscapes clip through `prepare_cityscapes`: <tmp>/train/000000/ (1024x512)."""
    from dmvfn_jax.data.prepare import prepare_cityscapes

    src = tmp_path_factory.mktemp("cs_src")
    city = src / "train" / "aachen"
    city.mkdir(parents=True)
    for f in sorted((real_data / "cityscapes_aachen00").glob("*.jpg")):
        (city / f.name).symlink_to(f)
    out = tmp_path_factory.mktemp("cs_out")
    prepare_cityscapes(src, out, split="train", progress=False, log=lambda *a: None)
    return out / "train"


# -- random LPIPS weights in the two files the LPIPS converter reads ------------------------
def random_alexnet_state(seed: int = 0) -> dict[str, np.ndarray]:
    """A torchvision-AlexNet-shaped state dict of random weights (features and classifier)."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in lpips_torch.alexnet_shapes().items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0] * 9
        state[key] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    for name in ("classifier.1", "classifier.4", "classifier.6"):  # dropped by the converter: tiny stand-ins
        state[f"{name}.weight"] = np.zeros((2, 2), np.float32)
        state[f"{name}.bias"] = np.zeros((2,), np.float32)
    return state


def random_linear_state(seed: int = 0) -> dict[str, np.ndarray]:
    """LPIPS-shaped linear layers of random non-negative weights."""
    rng = np.random.default_rng(seed)
    return {k: rng.random(s).astype(np.float32) for k, s in lpips_torch.linear_shapes().items()}
