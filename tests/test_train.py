"""The training CLI (python -m alexnet.train) on CPU: a smoke run, exact resume (after --max-steps and after
Ctrl-C), atomic checkpoints, 2-process gloo DDP against one process with the combined batch, the data sources
and the data order.  The model is the real AlexNet (227x227), so batches are tiny and runs a few steps long."""
import gzip
import importlib.util
import json
import os
import signal
import socket
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

from alexnet import data as D
from alexnet import train as T
from common import child_pythonpath  # tests/common.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING_KEYS = ("images_per_s", "elapsed")
LOSS_BOUND = 10.0   # cross-entropy over 10 classes starts near 3.6 with the paper's init

HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None
needs_sklearn = pytest.mark.skipif(not HAS_SKLEARN, reason="--data digits needs scikit-learn")


def base_args(out, *extra):
    # 8 training images in batches of 4: 2 steps per epoch.
    return ["--data", "digits", "--out", str(out), "--batch-size", "4", "--limit-train", "8", "--limit-val", "8",
            "--log-every", "1", "--no-progress", "--kernels", "ours"] + list(extra)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def final_state(out):
    return T.load_checkpoint(os.path.join(out, T.CHECKPOINT))["model"]


def without_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


@needs_sklearn
def test_smoke_run_writes_metrics_checkpoint_and_curves(tmp_path):
    out = tmp_path / "run"
    # 2 epochs of 2 steps, stopped after 3 steps: one complete epoch, then a partial one.
    result = T.main(base_args(out, "--epochs", "2", "--max-steps", "3"))
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert not rows[0].get("partial") and rows[1]["partial"] is True
    for r in rows:
        for key in ("epoch", "step", "train_loss", "val_loss", "top1", "top5", "lr", "images_per_s", "elapsed"):
            assert key in r and np.isfinite(r[key]), (key, r)
        assert 0 <= r["top1"] <= r["top5"] <= 1
    assert [r["step"] for r in rows] == [2, 3]
    assert result["step"] == 3 and result["top1"] == rows[-1]["top1"]
    steps = read_jsonl(out / "steps.jsonl")
    assert [s["step"] for s in steps] == [0, 1, 2] and all(np.isfinite(s["loss"]) for s in steps)
    ckpt = T.load_checkpoint(out / T.CHECKPOINT)
    assert (ckpt["epoch"], ckpt["step_in_epoch"], ckpt["step"]) == (1, 1, 3)
    for key in ("model", "optimizer", "scheduler", "rng", "data_stats", "history"):
        assert key in ckpt
    assert set(ckpt["rng"][0]) >= {"torch", "python", "numpy"}
    if importlib.util.find_spec("matplotlib") is None:
        return
    png = out / "curves.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in os.listdir(out) if "tmp" in p]


@needs_sklearn
def test_the_default_command_runs_the_digits_recipe(tmp_path, capsys):
    """`python -m alexnet.train` with no optimisation flags trains digits with its recipe (RECIPES["digits"]):
    here its first steps, on a small held-out sample (the full run is measured, docs/alexnet.md)."""
    out = tmp_path / "run"
    result = T.main(["--out", str(out), "--max-steps", "3", "--limit-val", "8", "--no-progress", "--log-every", "1"])
    recipe = T.RECIPES["digits"]
    ckpt = T.load_checkpoint(out / T.CHECKPOINT)
    for name, value in recipe.items():
        assert ckpt["args"][name] == value, name
    assert ckpt["args"]["data_kind"] == "digits" and ckpt["step"] == 3
    assert ckpt["optimizer"]["param_groups"][0]["momentum"] == 0.9
    said = capsys.readouterr().out
    assert "batch %d per process, lr %g" % (recipe["batch_size"], recipe["lr"]) in said, said
    steps = read_jsonl(out / "steps.jsonl")
    assert [s["step"] for s in steps] == [0, 1, 2]
    # The first steps stay in range (the paper's lr 0.01 on 10 classes sends the loss past 30 within them).
    assert all(np.isfinite(s["loss"]) and s["loss"] < LOSS_BOUND for s in steps), steps
    assert result["step"] == 3 and np.isfinite(result["val_loss"])


def _interrupt_after_first_step(monkeypatch):
    """Make the first optimizer step of the next run send this process a SIGINT (what Ctrl-C does)."""
    real = T.train_steps
    sent = []

    def train_steps(*a, **kw):
        user_on_step = kw["on_step"] if "on_step" in kw else a[7]

        def on_step(i, loss, n):
            user_on_step(i, loss, n)
            if not sent:
                sent.append(1)
                os.kill(os.getpid(), signal.SIGINT)

        if "on_step" in kw:
            kw["on_step"] = on_step
        else:
            a = a[:7] + (on_step,) + a[8:]
        return real(*a, **kw)

    monkeypatch.setattr(T, "train_steps", train_steps)
    return sent


@needs_sklearn
def test_resume_reproduces_an_uninterrupted_run(tmp_path, monkeypatch, capsys):
    # Dropout and every augmentation on: the RNG states and the data order must both be restored exactly.
    extra = ["--epochs", "2", "--dropout", "0.5", "--pca-std", "0.1", "--lr-drops", "2"]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    T.main(base_args(ref, *extra))

    # Ctrl-C after the first step (mid-epoch 1): checkpoint, exit status 130.
    sent = _interrupt_after_first_step(monkeypatch)
    with pytest.raises(SystemExit) as exc:
        T.main(base_args(cut, *extra))
    assert exc.value.code == T.EXIT_INTERRUPTED and sent
    monkeypatch.undo()
    ckpt = T.load_checkpoint(cut / T.CHECKPOINT)
    assert (ckpt["epoch"], ckpt["step_in_epoch"], ckpt["step"]) == (0, 1, 1)
    # --max-steps across the epoch boundary into epoch 2, then to the end.
    T.main(base_args(cut, *extra, "--resume", "--max-steps", "3"))
    result = T.main(base_args(cut, *extra, "--resume"))

    a, b = final_state(ref), final_state(cut)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert read_jsonl(ref / "steps.jsonl") == read_jsonl(cut / "steps.jsonl")
    assert len(read_jsonl(ref / "steps.jsonl")) == 4
    lrs = {s["epoch"]: s["lr"] for s in read_jsonl(cut / "steps.jsonl")}   # --lr-drops 2: epoch 2 at lr / 10,
    assert lrs[2] == pytest.approx(lrs[1] * 0.1)                          # applied once across the resumes
    ref_rows, cut_rows = read_jsonl(ref / "metrics.jsonl"), read_jsonl(cut / "metrics.jsonl")
    assert without_timing(ref_rows) == without_timing(cut_rows)   # the partial row of the --max-steps stop is gone
    assert result["step"] == 4 and result["top1"] == ref_rows[-1]["top1"]
    # Resuming a finished run does nothing, says so and how to extend it, and returns its last metrics -- also
    # without --epochs: flags left to the recipe continue as the checkpoint had them (2 epochs, not digits' default).
    capsys.readouterr()
    for again_args in (extra, extra[2:]):   # extra[2:]: without --epochs
        again = T.main(base_args(cut, *again_args, "--resume"))
        assert again["step"] == 4 and again["top1"] == result["top1"]
        said = capsys.readouterr().out
        assert "nothing left to do" in said and "finished all 2 epochs" in said and "--epochs 7" in said, said
        assert "resumed from" not in said
    # Following that advice continues the run.
    longer = T.main(base_args(cut, *extra[2:], "--resume", "--epochs", "3"))
    assert longer["step"] == 6 and longer["epoch"] == 3
    assert [r["epoch"] for r in read_jsonl(cut / "metrics.jsonl")] == [1, 2, 3]
    assert "resumed from" in capsys.readouterr().out


@needs_sklearn
def test_options_bf16_channels_last_two_devices_224_workers(tmp_path):
    out = tmp_path / "run"
    result = T.main(base_args(out, "--max-steps", "1", "--amp", "bf16", "--channels-last", "--devices", "cpu,cpu",
                              "--image-size", "224", "--workers", "1", "--limit-val", "4"))
    assert result["step"] == 1 and np.isfinite(result["train_loss"]) and np.isfinite(result["val_loss"])
    ckpt = T.load_checkpoint(out / T.CHECKPOINT)
    assert ckpt["args"]["devices"] == "cpu,cpu" and ckpt["args"]["image_size"] == 224


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "checkpoint.pt")
    T.save_checkpoint(path, {"w": torch.arange(4.0)})
    calls = []
    real_replace = os.replace

    def replace(src, dst):
        calls.append((src, dst))
        assert os.path.dirname(os.path.abspath(src)) == str(tmp_path)   # same folder: rename, not copy
        assert os.path.getsize(src) > 0
        return real_replace(src, dst)

    monkeypatch.setattr(T.os, "replace", replace)
    T.save_checkpoint(path, {"w": torch.arange(5.0)})
    assert len(calls) == 1 and calls[0][1] == path
    assert torch.equal(T.load_checkpoint(path)["w"], torch.arange(5.0))

    # A failure while writing leaves the previous checkpoint intact and no temporary file behind.
    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(T.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        T.save_checkpoint(path, {"w": torch.arange(6.0)})
    assert os.listdir(tmp_path) == ["checkpoint.pt"]
    assert torch.equal(T.load_checkpoint(path)["w"], torch.arange(5.0))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DDP_SCRIPT = """
import sys, torch
from alexnet import train
args = train.parse_args(sys.argv[2:])
result, model = train.run(args)
torch.save(model.state_dict(), sys.argv[1])
"""


@needs_sklearn
def test_two_process_gloo_ddp_matches_one_process_with_the_combined_batch(tmp_path):
    # Dropout off (masks come from per-process RNG streams); augmentation stays on: it is a function of
    # (seed, epoch, sample), and the ranks' interleaved shares of a step are the combined batch's samples.
    common = ["--epochs", "1", "--dropout", "0", "--threads", "1"]
    ddp_out, single_out = tmp_path / "ddp", tmp_path / "single"
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE="2",
               OMP_NUM_THREADS="1", PYTHONPATH=child_pythonpath())
    procs = []
    for rank in range(2):
        argv = base_args(ddp_out, *common, "--distributed")
        argv[argv.index("--batch-size") + 1] = "2"
        procs.append(subprocess.Popen(
            [sys.executable, "-c", DDP_SCRIPT, str(tmp_path / ("rank%d.pt" % rank))] + argv,
            env=dict(env, RANK=str(rank), LOCAL_RANK=str(rank)), cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    for p, o in zip(procs, outputs):
        assert p.returncode == 0, o

    single = T.main(base_args(single_out, *common))   # batch 4 = 2 ranks x 2

    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k          # the replicas stay identical
    # Against one process: the same updates up to fp32 summation order (a batch of 2 + 2 vs 4, 1 vs 2 threads).
    # The conv weight gradients sum ~10^4-10^5 products of 0..255 pixels with cancelling signs, so their
    # rounding is far above fp32 epsilon: measured ~1% of a conv layer's update at worst, 5e-4 of the whole
    # update's norm.  A real fault (summed instead of averaged gradients, or other samples) gives ~100%.
    ref = final_state(single_out)
    torch.manual_seed(0)
    from alexnet import AlexNet
    init = AlexNet(10, kernels="ours").state_dict()
    num = den = 0.0
    for k in ref:
        err, update = (r0[k] - ref[k]).abs().max().item(), (ref[k] - init[k]).abs().max().item()
        assert update > 0, k
        assert err <= 5e-2 * update, (k, err, update)
        num += (r0[k] - ref[k]).double().pow(2).sum().item()
        den += (ref[k] - init[k]).double().pow(2).sum().item()
    assert (num / den) ** 0.5 < 1e-2
    ddp_steps, single_steps = read_jsonl(ddp_out / "steps.jsonl"), read_jsonl(single_out / "steps.jsonl")
    assert len(ddp_steps) == len(single_steps) == 2
    np.testing.assert_allclose([s["loss"] for s in ddp_steps], [s["loss"] for s in single_steps], rtol=1e-5)
    (ddp_row,), (single_row,) = read_jsonl(ddp_out / "metrics.jsonl"), read_jsonl(single_out / "metrics.jsonl")
    np.testing.assert_allclose(ddp_row["val_loss"], single_row["val_loss"], rtol=1e-5)
    assert ddp_row["top1"] == single_row["top1"] and ddp_row["top5"] == single_row["top5"]
    assert single["step"] == 2


# ------------------------------------------------------------------------------------------------- data

def test_epoch_batches_are_a_function_of_seed_and_epoch_and_shard_like_one_big_batch():
    b0 = D.epoch_batches(20, 4, seed=3, epoch=0)
    assert b0 == D.epoch_batches(20, 4, seed=3, epoch=0)
    assert b0 != D.epoch_batches(20, 4, seed=3, epoch=1)
    assert len(b0) == 5 and sorted(i for b in b0 for _, i in b) == list(range(20))
    assert all(e == 0 for b in b0 for e, _ in b)
    ranks = [D.epoch_batches(20, 2, seed=3, epoch=0, rank=r, world_size=2) for r in range(2)]
    for s, batch in enumerate(b0):   # step s of both ranks together = step s of one process with batch 2 x 2
        assert sorted(batch) == sorted(ranks[0][s] + ranks[1][s])
    assert [len(b) for b in D.epoch_batches(10, 4, 0, 0)] == [4, 4]   # the incomplete batch is dropped
    shards = [D.eval_batches(7, 2, r, 2) for r in range(2)]
    assert sorted(i for s in shards for b in s for i in b) == list(range(7))


@needs_sklearn
def test_digits_augmentation_is_deterministic_per_sample_and_epoch():
    data = D.load_data("digits", image_size=227, limit_train=6, limit_val=4)
    assert data.num_classes == 10 and len(data.train) == 6 and len(data.val) == 4
    img, shift, label = data.train[(2, 3)]
    assert img.dtype == torch.uint8 and img.shape == (3, 227, 227) and shift.shape == (3,)
    img2, shift2, _ = data.train[(2, 3)]
    assert torch.equal(img, img2) and torch.equal(shift, shift2)
    others = [data.train[(e, 3)] for e in range(3, 8)]
    assert any(not torch.equal(o[0], img) for o in others) and any(not torch.equal(o[1], shift) for o in others)
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])   # grayscale replicated
    assert abs(shift[0] - shift[1]) < 1e-6                                # PCA noise = brightness on grayscale
    v, vshift, _ = data.val[1]
    assert torch.equal(vshift, torch.zeros(3)) and torch.equal(v, data.val[1][0])
    x = D.normalize_batch(torch.stack([v]), torch.stack([vshift]), data.mean, data.std, "cpu")
    assert x.dtype == torch.float32 and x.shape == (1, 3, 227, 227)
    assert data.train.flip is False   # digits: no flips by default
    small = D.load_data("digits", image_size=224, limit_train=2, limit_val=2, stats=data.stats)
    assert small.train[(0, 0)][0].shape == (3, 224, 224) and small.stats is data.stats


def _write_idx(path, array):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def test_fashion_mnist_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("t10k", 5)):
        _write_idx(tmp_path / ("%s-images-idx3-ubyte.gz" % split), rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / ("%s-labels-idx1-ubyte.gz" % split), np.arange(n) % 10)
    arr = D.read_idx(str(tmp_path / "t10k-labels-idx1-ubyte.gz"))
    assert arr.tolist() == [0, 1, 2, 3, 4]
    data = D.load_data("fashion-mnist", str(tmp_path), image_size=227)
    assert (len(data.train), len(data.val), data.num_classes) == (12, 5, 10)
    img, _, label = data.train[(0, 7)]
    assert img.shape == (3, 227, 227) and label == 7
    os.makedirs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="IDX"):
        D.load_data("fashion-mnist", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="no such directory"):
        D.load_data("fashion-mnist", str(tmp_path / "nowhere"))


def test_image_folder(tmp_path):
    pytest.importorskip("torchvision")
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            os.makedirs(tmp_path / split / cls)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(
                    tmp_path / split / cls / ("%d.png" % i))
    data = D.load_data("folder", str(tmp_path), image_size=224, resize=256)
    assert (len(data.train), len(data.val), data.num_classes, data.classes) == (6, 6, 2, ["cat", "dog"])
    assert data.train.flip is True   # folder data: flips on by default
    img, shift, label = data.train[(0, 4)]
    assert img.shape == (3, 224, 224) and label == 1 and shift.abs().sum() > 0
    assert torch.tensor(data.stats["eigval"]).ge(0).all() and len(data.std) == 3
    # One folder of class folders: a fixed 80/20 split.
    one = D.load_data("folder", str(tmp_path / "train"), image_size=224)
    assert (len(one.train), len(one.val)) == (5, 1)


def test_pca_color_noise():
    eigvec = torch.eye(3)
    noise = D.PCAColorNoise(eigvec, torch.tensor([0.5, 0.1, 0.0]), std=0.1)
    g = torch.Generator().manual_seed(0)
    shifts = torch.stack([noise.sample(g) for _ in range(4000)])
    assert shifts[:, 2].abs().max() == 0
    torch.testing.assert_close(shifts.std(0)[:2], torch.tensor([0.05, 0.01]), rtol=0.1, atol=0)
    img = torch.full((3, 2, 2), 0.5)
    out = noise(img, torch.Generator().manual_seed(1))
    expected = 0.5 + noise.sample(torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, expected[:, None, None].expand(3, 2, 2))
    assert torch.equal(D.PCAColorNoise(eigvec, torch.ones(3), std=0).sample(), torch.zeros(3))


def test_cli_argument_errors(capsys):
    with pytest.raises(SystemExit):
        T.parse_args(["--data", "folder"])
    with pytest.raises(SystemExit):
        T.parse_args(["--data", "digits", "/some/path"])
    with pytest.raises(SystemExit):
        T.parse_args(["--data", "imagenet"])
    args = T.parse_args([])
    assert (args.data_kind, args.momentum, args.weight_decay, args.image_size, args.normalize) == (
        "digits", 0.9, 5e-4, 227, "mean")
    # Each data set's recipe fills the optimisation flags left unset; given flags win.
    for argv, kind in (([], "digits"), (["--data", "folder", "/x"], "folder"),
                       (["--data", "fashion-mnist", "/x"], "fashion-mnist")):
        args = T.parse_args(argv)
        for name, value in T.RECIPES[kind].items():
            assert getattr(args, name) == value, (kind, name)
    assert (T.RECIPES["folder"]["batch_size"], T.RECIPES["folder"]["epochs"], T.RECIPES["folder"]["lr"]) == (
        128, 90, None)   # the paper's: lr by the number of classes
    args = T.parse_args(["--batch-size", "7", "--lr", "0.5"])
    assert (args.batch_size, args.lr) == (7, 0.5) and "batch_size" not in args.recipe_defaults
    assert T.default_lr(1000) == 0.01 and T.default_lr(10) == 0.001
    assert T.resolve_devices("cpu,cpu")[0] == (torch.device("cpu"), torch.device("cpu"))
    assert T.resolve_devices("cpu") == (None, torch.device("cpu"))
