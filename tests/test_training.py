"""The training loop: learning, checkpoints and resuming, SIGTERM, non-finite updates, configs."""

import re
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import REPO, demo_train_cmd, kill_at_checkpoint, model_params, small_dmvfn
from small_model import SMALL_MODEL  # tests/scripts
from dmvfn_jax import checkpoint as ckpt
from dmvfn_jax import parallel
from dmvfn_jax.data.sources import heldout_synthetic, synthetic_options
from dmvfn_jax.errors import InputError
from dmvfn_jax.losses import dmvfn_loss
from dmvfn_jax.train import build, checkpoints, loop
from dmvfn_jax.train import step as step_lib
from dmvfn_jax.train.optim import lr_schedule, make_train_optimizer

sys.path.insert(0, str(REPO))
from configs import cityscapes, demo, kitti, ucf101  # noqa: E402

# The loop's mechanics (resuming, signals, checkpoints, bad updates) and its learning are checked on
# the suite's small model (tests/scripts/small_model.py); initial weights on the official nine.
TINY = ["--config.num_train_steps=10", "--config.warmup_steps=2", "--config.log_every=1",
        "--config.eval.num_clips=0", "--config.image_every=0"]


def tiny_config(small: bool = True, **overrides):
    c = demo.get_config()
    c.num_train_steps, c.warmup_steps, c.log_every, c.image_every = 10, 2, 1, 0
    c.eval.num_clips = 0
    if small:
        c.model.widths, c.model.scales = SMALL_MODEL["widths"], SMALL_MODEL["scales"]
    for k, v in overrides.items():
        c[k] = v
    return c


def train_cmd(workdir, *extra):
    return demo_train_cmd(workdir, *TINY, *extra)


def _loss(model, f):
    outs = model.train_outputs(f[:, 0], f[:, 1], jnp.ones((f.shape[0], model.num_blocks)))
    return dmvfn_loss(outs, f[:, 2])[0]


_heldout_loss = nnx.jit(_loss)


@nnx.jit  # one program for the model before and after training (eagerly, op by op: ~30 s on 2 cores)
def _heldout_scores(model, f):
    pred = model.infer(f[:, 0], f[:, 1]).prediction
    return _loss(model, f), jnp.mean(-10 * jnp.log10(jnp.mean((pred - f[:, 2]) ** 2, axis=(1, 2, 3))))


def _frames(clips):
    return jnp.asarray(clips.astype(np.float32) / 255.0)


def heldout_scores(model, clips):
    """(Laplacian loss of the blocks' outputs, mean PSNR of the prediction) on held-out clips."""
    loss, psnr = _heldout_scores(model, _frames(clips))
    return float(loss), float(psnr)


def heldout_loss(model, clips) -> float:
    """`heldout_scores`'s loss alone (half the program to compile)."""
    return float(_heldout_loss(model, _frames(clips)))


@pytest.mark.slow
@pytest.mark.command_precision  # the small model's demo step of train.py's runs here
def test_loss_falls_and_psnr_rises(tmp_path):
    """The demo's recipe learns: 60 steps of the suite's small model lower the held-out loss and raise
    the PSNR (the nine's training is the same loop; their gradients are test_model_parity's)."""
    config = tiny_config(num_train_steps=60, warmup_steps=5, checkpoint_every=1000, image_every=30)
    before = build.build_model(config)
    clips = heldout_synthetic(config.data.seed, 16, 3, 64, 64, **synthetic_options(config.data))  # as trained
    loss0, psnr0 = heldout_scores(before, clips)
    summary = loop.train_and_evaluate(config, tmp_path, model=before)  # the model just scored: built once
    assert summary["status"] == "completed" and summary["step"] == 60
    from dmvfn_jax import Predictor

    after = Predictor.from_checkpoint(tmp_path / "model").model
    loss1, psnr1 = heldout_scores(after, clips)
    assert loss1 < 0.95 * loss0, (loss0, loss1)
    assert psnr1 > psnr0 + 0.5, (psnr0, psnr1)
    # observability: TensorBoard events with the loss terms, routing rates and speed
    events = b"".join(p.read_bytes() for p in (tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    for tag in (b"train/total", b"train/lap", b"train/lr", b"train/grad_norm", b"routing/block1",
                b"speed/clips_per_s", b"train/inputs_prediction_truth", b"routing/distinct_patterns",
                b"routing/blocks_still", b"routing/blocks_shifted"):
        assert tag in events, tag
    log = (tmp_path / "train.log").read_text()
    # how the routing depends on the input, at every picture: the batch's pairs, still and shifted
    assert len(re.findall(r"routing on \d+ probe pairs: \d+ gate pattern\(s\), blocks [\d.]+ \+- [\d.]+; moving "
                          r"[\d.]+, still [\d.]+, shifted [\d.]+", log)) == 2, log
    assert log.count("training on the Laplacian term alone") == 1
    assert re.search(r"step 60/60 \(100%\).*clips/s  ETA", log)


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_exact(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # the uninterrupted run first, then the run to kill, which reads the step it compiled from the
    # compilation cache (side by side, both compiled it: the suite's other worker has the other core)
    r = subprocess.run(train_cmd(straight, "--config.checkpoint_every=5"), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    kill_at_checkpoint(train_cmd(killed, "--config.checkpoint_every=5", "--config.async_checkpoints=False"),
                       killed / "checkpoints" / "5", timeout=300)
    assert "Unable to initialize backend" not in r.stderr  # JAX's INFO on backends this machine lacks
    # the loop feeds each step the schedule's rate (the step itself does not hold the schedule)
    c = demo.get_config()
    schedule = lr_schedule(10, 2, c.base_lr, c.peak_lr)
    logged = [float(x) for x in re.findall(r"step \d+/10 .*?  lr (\S+)", r.stdout + r.stderr)]
    assert logged == [float(f"{float(schedule(k)):.2e}") for k in range(10)], logged
    assert not (killed / "model").exists()  # really killed before the end
    r = subprocess.run(train_cmd(killed, "--config.checkpoint_every=5"), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"resumed from .* at step (5|10)", r.stdout), r.stdout
    for a, b in zip(model_params(straight / "model"), model_params(killed / "model"), strict=True):
        np.testing.assert_array_equal(a, b)
    # the trained model records its blocks, and loads as the model it is
    from dmvfn_jax import Predictor

    meta = ckpt.load_checkpoint(straight / "model")[1]
    assert (tuple(meta["widths"]), tuple(meta["scales"])) == (SMALL_MODEL["widths"], SMALL_MODEL["scales"])
    model = Predictor.from_checkpoint(straight / "model").model
    assert (model.widths, model.scales) == (SMALL_MODEL["widths"], SMALL_MODEL["scales"])


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly(tmp_path):
    cmd = train_cmd(tmp_path, "--config.num_train_steps=100000", "--config.checkpoint_every=100000")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if re.search(r"step 2/100000", line):
            proc.send_signal(signal.SIGTERM)
            break
    out, _ = proc.communicate(timeout=300)
    text = "".join(lines) + out
    assert proc.returncode == 0, text[-3000:]
    m = re.search(r"SIGTERM: saved a checkpoint at step (\d+)", text)
    assert m, text[-3000:]
    assert (tmp_path / "checkpoints" / m.group(1)).is_dir()


@pytest.mark.slow
@pytest.mark.command_precision  # the small model's demo step of train.py's runs here
def test_incomplete_checkpoint_is_never_the_latest(tmp_path):
    config = tiny_config(num_train_steps=4, checkpoint_every=1, keep_checkpoints=2)
    loop.train_and_evaluate(config, tmp_path)
    ckdir = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckdir.iterdir() if p.name.isdigit()) == ["3", "4"]  # the latest 2 kept
    # a save of step 6 killed mid-write: orbax writes into a temporary name and renames at the end
    partial = ckdir / "6.orbax-checkpoint-tmp-1234567"
    shutil.copytree(ckdir / "4", partial)
    for f in list(partial.rglob("*"))[::2]:
        if f.is_file():
            f.unlink()
    mngr = checkpoints.checkpoint_manager(tmp_path, config)
    assert mngr.latest_step() == 4
    mngr.close()
    config.num_train_steps = 6  # a longer schedule: a change that alters the run, accepted on purpose
    config.accept_config_changes = True
    summary = loop.train_and_evaluate(config, tmp_path)
    assert summary["step"] == 6 and summary["accepted_config_changes"] == ["num_train_steps: 4 -> 6"]
    log = (tmp_path / "train.log").read_text()
    assert "at step 4" in log
    assert sorted(p.name for p in ckdir.iterdir() if p.name.isdigit()) == ["5", "6"]


@pytest.mark.slow
@pytest.mark.command_precision  # as the bfloat16 test below, whose float32 step this is
def test_nonfinite_update_is_skipped_and_counted():
    opt = make_train_optimizer()
    net, state = step_lib.init_state(small_dmvfn(), opt, seed=0)
    step = jax.jit(step_lib.make_train_step(net, opt, update_mode="per_batch"))
    clips = heldout_synthetic(0, 4, 3, 64, 64)  # the float32 step of the bfloat16 test below: one compile
    bad_params = net.params(state.params)  # copies: the good state stays intact
    pure = nnx.to_pure_dict(bad_params)
    pure["blocks"][0]["lastconv"]["bias"] = jnp.full_like(pure["blocks"][0]["lastconv"]["bias"], jnp.nan)
    nnx.replace_by_pure_dict(bad_params, pure)
    bad = state._replace(params=parallel.pack(bad_params))
    new, metrics = step(bad, clips, 1e-4)
    assert int(new.skipped) == 1 and int(new.bad_streak) == 1
    np.testing.assert_array_equal(np.asarray(new.params), np.asarray(bad.params))
    good, _ = step(state, clips, 1e-4)
    assert int(good.skipped) == 0 and int(good.bad_streak) == 0


@pytest.mark.slow
@pytest.mark.command_precision  # the small model's demo step of train.py's runs here
def test_training_stops_after_max_bad_steps(tmp_path):
    graphdef, params = nnx.split(small_dmvfn(), nnx.Param)
    pure = nnx.to_pure_dict(params)
    pure["routing"]["l1"]["bias"] = np.full_like(np.asarray(pure["routing"]["l1"]["bias"]), np.nan)
    nnx.replace_by_pure_dict(params, pure)
    broken = nnx.merge(graphdef, params)
    config = tiny_config(max_bad_steps=3)
    with pytest.raises(loop.TrainingDiverged, match=r"step 3: 3 updates in a row .* non-finite"):
        loop.train_and_evaluate(config, tmp_path, model=broken)


@pytest.mark.command_precision
def test_command_precision_gives_the_values_of_highest_on_cpu():
    """The premise of the `command_precision` marker: on the CPU the tests run on, the default matmul
    precision computes what `highest` does (float32 either way), bit for bit; checked on the suite's
    small model, which the tests so marked train."""
    small = small_dmvfn()
    graphdef, params = nnx.split(small)
    clips = heldout_synthetic(0, 1, 2, 32, 32).astype(np.float32) / 255
    outputs = lambda p, a, b: nnx.merge(graphdef, p).train_outputs(a, b, jnp.ones((1, small.num_blocks)))  # noqa: E731
    default = jax.jit(outputs)(params, clips[:, 0], clips[:, 1])
    with jax.default_matmul_precision("highest"):
        highest = jax.jit(outputs)(params, clips[:, 0], clips[:, 1])
    for d, h in zip(default, highest, strict=True):
        np.testing.assert_array_equal(np.asarray(d), np.asarray(h))


def test_configs():
    for mod, frames in ((cityscapes, 30), (kitti, 9), (ucf101, 10)):
        c = mod.get_config()
        assert c.batch_size == 64 and c.peak_lr == 1e-4 and c.base_lr == 1e-5 and c.warmup_steps == 2000
        assert c.weight_decay == 1e-3 and c.update_mode == "update_per_triplet" and c.seed == 1234
        assert c.data.num_frames == frames and c.data.channel_order == "BGR"
    c = demo.get_config()
    assert c.data.source == "synthetic" and c.batch_size < 64


def test_bad_config_is_refused_before_compute(tmp_path):
    with pytest.raises(InputError, match="50x64: .*multiples of 32"):
        loop.train_and_evaluate(tiny_config(data=dict(demo.get_config().data, height=50)), tmp_path)
    with pytest.raises(InputError, match="warmup_steps"):
        loop.train_and_evaluate(tiny_config(warmup_steps=20), tmp_path)
    for model, match in ((dict(widths=(16, 16), scales=(1,)), r"config.model.widths \[16, 16\] and config.model.scales "
                          r"\[1\] must be non-empty and of one length"),
                         (dict(widths=(16, 18), scales=(2, 1)), r"config.model.widths \[16, 18\]: .*multiple of 4"),
                         (dict(widths=(16, 16), scales=(3, 1)), r"config.model.scales \[3, 1\]: each must be 1, 2 or 4")):
        with pytest.raises(InputError, match=match):
            loop.train_and_evaluate(tiny_config(model=model), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_a_config_saved_before_config_model_existed_resumes_as_the_official_blocks():
    """Runs saved their configs before `config.model` existed: resuming one with the official
    blocks is no change, with other blocks a change that alters the run."""
    from dmvfn_jax.train.resume import config_changes, config_snapshot

    current = config_snapshot(tiny_config(small=False))
    saved = {k: v for k, v in current.items() if k != "model"}
    assert config_changes(saved, current) == ([], [])
    breaking, _ = config_changes(saved, config_snapshot(tiny_config()))
    assert breaking == ["model.scales: [4, 4, 4, 2, 2, 2, 1, 1, 1] -> [2, 1]",
                        "model.widths: [160, 160, 160, 80, 80, 80, 44, 44, 44] -> [16, 16]"], breaking


@pytest.mark.slow
@pytest.mark.command_precision  # the small model's demo step of train.py's runs here
def test_init_checkpoint_channel_order_must_match_the_data(tmp_path, converted_dir, small_checkpoint):
    """Official weights expect BGR: training them on RGB data is refused unless asked, and the log
    says which order the frames reach the network in. The small model's BGR checkpoint
    (conftest.small_checkpoint) stands in for the converted nine where it is trained."""
    from configs import finetune

    with pytest.raises(InputError, match=r"init_checkpoint .* was trained on BGR frames, but config.data.channel_order "
                                         r"is RGB: .*--config.data.channel_order=BGR, or "
                                         r"--config.allow_channel_order_change=True"):
        loop.train_and_evaluate(tiny_config(small=False, init_checkpoint=str(converted_dir)), tmp_path / "refused")
    assert not (tmp_path / "refused" / "checkpoints").exists()
    # weights of other blocks than config.model's are refused, naming both
    with pytest.raises(InputError, match=r"init_checkpoint .* has blocks of widths \[160, 160, 160, 80, 80, 80, 44, 44, "
                                         r"44\] at scales \[4, 4, 4, 2, 2, 2, 1, 1, 1\], but config.model asks for "
                                         r"widths \[16, 16\] at scales \[2, 1\]"):
        loop.train_and_evaluate(tiny_config(init_checkpoint=str(converted_dir), data=dict(demo.get_config().data,
                                            channel_order="BGR")), tmp_path / "other_blocks")
    assert not (tmp_path / "other_blocks" / "checkpoints").exists()
    config = tiny_config(init_checkpoint=str(small_checkpoint), allow_channel_order_change=True, num_train_steps=3)
    loop.train_and_evaluate(config, tmp_path / "asked")
    logged = (tmp_path / "asked" / "train.log").read_text()
    assert "was trained on BGR frames; training it on RGB frames (allow_channel_order_change)" in logged
    assert "frames reach the network as RGB" in logged
    assert ckpt.load_checkpoint(tmp_path / "asked" / "model")[1]["channel_order"] == "RGB"
    # the fine-tuning config reads BGR and needs the weights it fine-tunes
    c = finetune.get_config()
    assert c.data.channel_order == "BGR" and c.data.source == "tfds" and c.data.tfds_name == "dmvfn_video_files"
    with pytest.raises(InputError, match=r"config 'finetune' fine-tunes existing weights: pass --config.init_checkpoint"):
        loop.train_and_evaluate(c, tmp_path / "finetune")


def test_train_py_reports_config_errors(tmp_path):
    r = subprocess.run(train_cmd(tmp_path, "--config.data.height=50"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert "train.py: error: data.height x data.width = 50x64" in r.stderr


@pytest.mark.slow
@pytest.mark.command_precision  # its float32 step is then the non-finite test's program
def test_bfloat16_compute_tracks_float32(jax_model):
    """bfloat16 compute against float32: the nine blocks' loss on held-out clips, every block on,
    within 2%; and a bfloat16 training step (of the suite's small model: the step's dtypes are the
    point there, and its float32 step is the non-finite test's) keeps float32 parameters, skips
    nothing, and its loss is within 2% of the float32 step's."""
    from dmvfn_jax.models import DMVFN

    clips = heldout_synthetic(1, 4, 3, 64, 64)
    nine = ckpt.model_params(jax_model)
    build = lambda dtype: ckpt.build_with_params(lambda: DMVFN(rngs=nnx.Rngs(0), dtype=dtype), nine)  # noqa: E731
    held = {name: heldout_loss(build(dtype), clips) for name, dtype in (("f32", None), ("bf16", jnp.bfloat16))}
    assert abs(held["bf16"] - held["f32"]) <= 0.02 * held["f32"], held
    params = ckpt.model_params(small_dmvfn())
    losses = {}
    for name, dtype in (("f32", None), ("bf16", jnp.bfloat16)):
        model = ckpt.build_with_params(lambda: DMVFN(rngs=nnx.Rngs(0), dtype=dtype, **SMALL_MODEL), params)
        opt = make_train_optimizer()
        net, state = step_lib.init_state(model, opt, seed=0)
        step = jax.jit(step_lib.make_train_step(net, opt, update_mode="per_batch"))
        new, metrics = step(state, clips, 1e-4)
        losses[name] = float(metrics["total"])
        assert new.params.dtype == jnp.float32  # parameters stay float32
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(net.params(new.params)))
        assert int(new.skipped) == 0
    assert abs(losses["bf16"] - losses["f32"]) <= 0.02 * losses["f32"], losses
