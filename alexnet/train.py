"""Train the two-tower AlexNet: `python -m alexnet.train [options]` (`--help` lists them).

    python -m alexnet.train                                   # digits (scikit-learn's, bundled), its recipe
    python -m alexnet.train --data folder ~/imagenet --devices cuda:0,cuda:1 --amp bf16   # the paper's recipe
    python -m alexnet.train --data fashion-mnist ~/fmnist --resume
    torchrun --nproc_per_node 8 -m alexnet.train --distributed --data folder ~/imagenet   # --batch-size per process

The paper's recipe: SGD, momentum 0.9, weight decay 5e-4, batch 128, lr 0.01 divided by 10 when the held-out
top-1 stops improving (ReduceLROnPlateau, mode "max", factor 0.1, --patience epochs); centred raw 0..255 pixel
values as input (--normalize mean); random crops, horizontal flips (--flip, default on for folder data only) and
PCA colour noise; centre crop for evaluation.  Batch size, epochs, lr, --lr-drops and --patience default per
data set (RECIPES): the paper's for folder data, a short measured one for digits.

Learning rate with few classes: the paper's lr 0.01 is for 1000 classes.  With the paper's init (N(0, 0.01)
weights, unit biases in conv2/4/5 and fc6/7) the logits at the start hardly depend on the image, and fc8's
update along the large common component of fc7's output (4096 units near 1) moves every logit by about
lr * 4096 * (the class's mean softmax gradient), which is ~100x larger with 10 classes than with 1000.  On digits
(batch 32) at lr 0.01 the first steps overshoot (loss 3.4 -> 36) and leave fc7 dead (99.8% of tower A's fc7
units never fired on a batch after 30 steps; the loss stays at chance); at 0.001 it stays alive and learns.
So the default lr is 0.01 with >= 100 classes and 0.001 below (--lr overrides).

Outputs in --out (default runs/alexnet): metrics.jsonl (one JSON line per epoch: epoch, step, train_loss,
val_loss, top1, top5, lr, images_per_s, elapsed; top1/top5 on the held-out split; a last line with
"partial": true when --max-steps stopped the run mid-epoch -- a resumed run drops it), steps.jsonl (the
loss of every optimizer step), curves.png (loss and accuracy, rewritten each epoch; needs matplotlib),
checkpoint.pt (written atomically every epoch, at --max-steps and on Ctrl-C).

--resume continues from checkpoint.pt exactly where it stopped (mid-epoch too): the data order and the
augmentation are a pure function of (seed, epoch, sample), and the checkpoint holds the model, optimizer,
scheduler, grad scaler, RNG states (torch CPU and CUDA -- our dropout draws its seed from torch's generator,
so that restores the masks --, python, numpy) and the position in the epoch; the resumed run skips the
batches already done.  So it gives the same numbers as an uninterrupted run (same hardware and settings).

Ctrl-C: the current step finishes, a checkpoint is written and the process exits with status 130 (a second
Ctrl-C aborts at once, without a checkpoint).

Distributed (--distributed under torchrun): one process per GPU (or per GPU pair with --devices pair, or CPU
processes with gloo), DistributedDataParallel, --batch-size per process.  Rank r takes positions r, r + W, ...
of the epoch's permutation, so W ranks of batch B step exactly like one process of batch W * B (same samples,
same augmentation; dropout masks differ).  Rank 0 alone prints, writes metrics and checkpoints (all ranks'
RNG states go into it); the held-out set is sharded and the counts all-reduced; every rank reads the
checkpoint on --resume, so OUT must be on a shared filesystem for multi-node runs.

Python API (used by the tests): main(argv) -> final metrics dict; run(args) -> (metrics, model);
build_parser(), build_model(args, num_classes, devices), train_steps(...), evaluate(...),
save_checkpoint(path, obj).
"""
import argparse
import json
import os
import random
import signal
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from . import data as D

__all__ = ["main", "run", "build_parser", "parse_args", "build_model", "train_steps", "evaluate",
           "save_checkpoint", "load_checkpoint", "Interrupted", "EXIT_INTERRUPTED"]

EXIT_INTERRUPTED = 130
CHECKPOINT = "checkpoint.pt"


class Interrupted(Exception):
    """Raised by run() after Ctrl-C, once the checkpoint is written (main() turns it into exit status 130)."""


# ----------------------------------------------------------------------------------------------- arguments

def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m alexnet.train", description="Train the two-tower AlexNet (Krizhevsky et al. 2012) with "
        "the paper's recipe; see the module docstring (pydoc alexnet.train) for details.")
    g = p.add_argument_group("data")
    g.add_argument("--data", nargs="+", default=["digits"], metavar=("KIND", "PATH"),
                   help="digits (scikit-learn's 8x8 digits, needs scikit-learn) | fashion-mnist PATH (folder of "
                        "the four IDX files) | folder PATH (ImageFolder: PATH/train + PATH/val, or one folder "
                        "split 80/20); default digits")
    g.add_argument("--image-size", type=int, choices=(227, 224), default=227,
                   help="network input (224 is zero-padded to 227 by the model, as cuda-convnet did; "
                        "default 227)")
    g.add_argument("--resize", type=int, default=256,
                   help="images are resized to this square before cropping (default 256)")
    g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flips (default: on for folder data, off for digits / fashion-mnist, "
                        "whose mirror images are other glyphs or unnatural)")
    g.add_argument("--normalize", choices=("mean", "meanstd"), default="mean",
                   help="mean: centred raw 0..255 pixel values, the paper's input (see alexnet.data); "
                        "meanstd: also divide by the per-channel std (default mean)")
    g.add_argument("--pca-std", type=float, default=0.1,
                   help="std of the PCA colour noise's alphas (default 0.1; 0: off)")
    g.add_argument("--no-augment", dest="augment", action="store_false",
                   help="no random crop / flip / colour noise: train on centre crops")
    g.add_argument("--workers", type=int, default=None,
                   help="DataLoader worker processes (default: 0 on CPU, min(8, cpus) on GPU)")
    g.add_argument("--limit-train", type=int, default=None, help=argparse.SUPPRESS)
    g.add_argument("--limit-val", type=int, default=None, help=argparse.SUPPRESS)

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=None,
                   help="default: the data set's recipe (digits %(digits)d, fashion-mnist %(fashion)d, folder %(folder)d; "
                        "see RECIPES)" % {"digits": RECIPES["digits"]["epochs"],
                                          "fashion": RECIPES["fashion-mnist"]["epochs"],
                                          "folder": RECIPES["folder"]["epochs"]})
    g.add_argument("--max-steps", type=int, default=None,
                   help="stop after this many optimizer steps in total (checkpointed; --resume continues)")
    g.add_argument("--batch-size", type=int, default=None,
                   help="per process: with --distributed the global batch is WORLD_SIZE times this (default: the "
                        "data set's recipe: digits %d, otherwise the paper's 128)" % RECIPES["digits"]["batch_size"])
    g.add_argument("--lr", type=float, default=None,
                   help="initial learning rate (default: the data set's recipe: digits %g; otherwise the paper's "
                        "0.01 with >= 100 classes, 0.001 with fewer: see the module docstring)"
                        % RECIPES["digits"]["lr"])
    g.add_argument("--lr-drops", type=_epoch_list, default=None, metavar="EPOCHS",
                   help="comma-separated epochs (1-based) at whose start the lr is divided by 10, on top of the "
                        "plateau rule ('' for none; default: the data set's recipe: digits %s, otherwise none)"
                        % (",".join(map(str, RECIPES["digits"]["lr_drops"])) or "none"))
    g.add_argument("--momentum", type=float, default=0.9, help="default 0.9")
    g.add_argument("--weight-decay", type=float, default=5e-4, help="default 5e-4")
    g.add_argument("--patience", type=int, default=None,
                   help="epochs without a held-out top-1 improvement before the lr is divided by 10 (default: the "
                        "data set's recipe: digits %d, otherwise 2)" % RECIPES["digits"]["patience"])
    g.add_argument("--dropout", type=float, default=0.5, help="fc6/fc7 dropout probability (default 0.5)")
    g.add_argument("--seed", type=int, default=0, help="default 0")

    g = p.add_argument_group("model and hardware")
    g.add_argument("--kernels", choices=("ours", "torch"), default="ours",
                   help="alexnet_kernels' fused ops or torch's stock layers (default ours)")
    g.add_argument("--backend", choices=("auto", "triton", "cuda", "cpu", "torch"), default=None,
                   help="alexnet_kernels backend for --kernels ours (default: the package default)")
    g.add_argument("--devices", default=None,
                   help="one device (cpu, cuda, cuda:1) or two comma-separated devices for the two towers "
                        "(cuda:0,cuda:1), or 'pair': GPUs 2*local_rank and 2*local_rank+1 "
                        "(default: cuda if available, else cpu; with --distributed: cuda:local_rank)")
    g.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none",
                   help="autocast dtype (fp16 uses a GradScaler; default none)")
    g.add_argument("--channels-last", action="store_true", help="channels_last model and inputs")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--deterministic", action="store_true",
                   help="torch.use_deterministic_algorithms and no cuDNN autotuning (default: autotune)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    g.add_argument("--distributed", action="store_true",
                   help="DistributedDataParallel; start with torchrun (reads RANK, WORLD_SIZE, LOCAL_RANK, "
                        "MASTER_ADDR, MASTER_PORT); nccl on GPUs, gloo on CPU")

    g = p.add_argument_group("output")
    g.add_argument("--out", default=os.path.join("runs", "alexnet"), help="output folder (default runs/alexnet)")
    g.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    g.add_argument("--log-every", type=int, default=10,
                   help="steps between loss read-backs (progress bar, steps.jsonl); each is a device sync")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm progress bar")
    return p


def _epoch_list(text):
    try:
        epochs = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated epoch numbers, got %r" % text)
    if any(e < 1 for e in epochs):
        raise argparse.ArgumentTypeError("epochs are numbered from 1, got %r" % text)
    return epochs


def parse_args(argv=None):
    """Parsed arguments, with the data set's recipe (RECIPES) filling the optimisation flags not given;
    args.recipe_defaults names those (a --resume takes them from the checkpoint instead)."""
    p = build_parser()
    args = p.parse_args(argv)
    kind = args.data[0]
    if kind not in D.DATASETS:
        p.error("--data: unknown kind %r (choose from %s)" % (kind, ", ".join(D.DATASETS)))
    if kind == "digits" and len(args.data) != 1:
        p.error("--data digits takes no PATH")
    if kind != "digits" and len(args.data) != 2:
        p.error("--data %s needs exactly one PATH" % kind)
    args.data_kind, args.data_path = kind, (args.data[1] if len(args.data) > 1 else None)
    args.recipe_defaults = []
    for name, value in RECIPES[kind].items():
        if getattr(args, name) is None and value is not None:
            setattr(args, name, value)
            args.recipe_defaults.append(name)
    for name in ("epochs", "batch_size", "log_every"):
        if getattr(args, name) < 1:
            p.error("--%s must be >= 1" % name.replace("_", "-"))
    if args.patience < 0:
        p.error("--patience must be >= 0")
    if args.max_steps is not None and args.max_steps < 0:
        p.error("--max-steps must be >= 0")
    if not 0.0 <= args.dropout < 1.0:
        p.error("--dropout must be in [0, 1)")
    return args


# ----------------------------------------------------------------------------------------------- setup

def setup_distributed(args, device):
    """(rank, world_size, local_rank); initialises the process group when --distributed (nccl when the main
    device is a GPU, else gloo; rendezvous from torchrun's environment variables)."""
    if not args.distributed:
        return 0, 1, 0
    import torch.distributed as dist
    missing = [v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise RuntimeError("--distributed: %s not set; start with torchrun --nproc_per_node N -m alexnet.train "
                           "--distributed ..." % ", ".join(missing))
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), _local_rank(args)


def _local_rank(args):
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0"))) if args.distributed else 0


# Defaults per data set, for the flags left unset (lr None: default_lr by the number of classes).
#
# folder (ImageNet-sized data): the paper's recipe -- batch 128, lr 0.01 (>= 100 classes), ~90 epochs, lr / 10
# on a held-out plateau.
# digits: 1437 training images, so the paper's batch 128 gives only 11 optimizer steps an epoch; at lr 0.001
# (see above) 5 epochs -- 55 steps -- left the held-out top-1 at 30.6 % (issue 14).  Smaller batches take more
# steps for the same CPU time.  Measured on 2 CPU cores (seed 0, held-out top-1 after epochs 1, 2, 3, ...):
#   batch 16, lr 0.001:                           43.6, 88.6, 92.2 %
#   the same, lr / 10 for epoch 4 (--lr-drops 4):  43.6, 88.6, 92.2, 95.8 % (356 steps, 5748 images): the recipe
#     (re-run at 8470c8e, a later tree with channels_last conv weights: 35.6, 86.9, 89.7, 96.4 %)
#   batch 32, lr 0.002:                           10.0 % (chance) after epoch 1: too high, as lr 0.01 above
#   batch 32, lr 0.001 (the README before):       95.3 % only after 5 epochs (7185 images)
# fashion-mnist (60,000 images: 469 steps an epoch at batch 128): the paper's batch with the few-class lr;
# not measured.
RECIPES = {
    "digits": {"batch_size": 16, "epochs": 4, "lr": 0.001, "lr_drops": [4], "patience": 2},
    "fashion-mnist": {"batch_size": 128, "epochs": 5, "lr": None, "lr_drops": [], "patience": 2},
    "folder": {"batch_size": 128, "epochs": 90, "lr": None, "lr_drops": [], "patience": 2},
}


def default_lr(num_classes):
    """The paper's 0.01 for >= 100 classes; 0.001 for fewer (see the module docstring)."""
    return 0.01 if num_classes >= 100 else 0.001


def resolve_devices(spec, local_rank=0, distributed=False):
    """-> (devices for AlexNet (a pair or None), the main device: where inputs go and the logits come out)."""
    if spec is None:
        if torch.cuda.is_available():
            return None, torch.device("cuda", local_rank if distributed else torch.cuda.current_device())
        return None, torch.device("cpu")
    if spec == "pair":
        pair = (torch.device("cuda", 2 * local_rank), torch.device("cuda", 2 * local_rank + 1))
        return pair, pair[0]
    parts = [s.strip() for s in spec.split(",") if s.strip()]
    if len(parts) == 1:
        return None, torch.device(parts[0])
    if len(parts) == 2:
        pair = tuple(torch.device(s) for s in parts)
        return pair, pair[0]
    raise ValueError("--devices: one device or two comma-separated devices, got %r" % spec)


def build_model(args, num_classes, devices=None, main_device="cpu"):
    """The AlexNet of these arguments (initialised from torch's global RNG), placed on its device(s)."""
    from .model import AlexNet  # imports alexnet_kernels' modules (registers its ops)
    model = AlexNet(num_classes, devices=devices, kernels=args.kernels, dropout=args.dropout,
                    backend=args.backend)
    if devices is None:
        model = model.to(main_device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _rng_state(devices):
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
             "cuda": {}}
    for d in devices:
        if d.type == "cuda":
            state["cuda"][str(d)] = torch.cuda.get_rng_state(d)
    return state


def _set_rng_state(state):
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    for d, s in state.get("cuda", {}).items():
        torch.cuda.set_rng_state(s, torch.device(d))


def save_checkpoint(path, obj):
    """torch.save to a temporary file in the same folder, fsync, then os.replace: a crash leaves either the old
    checkpoint or the new one, never a torn file."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, ".%s.tmp-%d" % (os.path.basename(path), os.getpid()))
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    try:  # make the rename itself durable
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def load_checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _atomic_write_text(path, text):
    tmp = path + ".tmp-%d" % os.getpid()
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_curves(history, path):
    """Loss (train, held-out) and held-out top-1/top-5 per epoch -> PNG.  False (with a warning) if matplotlib is
    missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        warnings.warn("matplotlib is not installed (%s): %s not written" % (exc, path))
        return False
    x = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(x, [h["train_loss"] for h in history], "o-", label="train")
    ax1.plot(x, [h["val_loss"] for h in history], "s-", label="held-out")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy")
    ax1.set_title("loss")
    ax1.legend()
    ax2.plot(x, [100 * h["top1"] for h in history], "o-", label="top-1")
    ax2.plot(x, [100 * h["top5"] for h in history], "s-", label="top-5")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("held-out accuracy (%)")
    ax2.set_ylim(0, 100)
    ax2.set_title("accuracy")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path + ".tmp-%d.png" % os.getpid()
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return True


class _StopFlag:
    """SIGINT -> a flag read between steps (the step in flight completes); a second SIGINT raises
    KeyboardInterrupt as usual."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: plain KeyboardInterrupt semantics
            self._old = None
        return self

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\n[alexnet.train] Ctrl-C: finishing the step, writing the checkpoint "
              "(Ctrl-C again to abort without one)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def _progress(total, initial, desc, enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, leave=True)


# ----------------------------------------------------------------------------------------------- steps

def _autocast(device, amp):
    if amp == "none":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def train_steps(model, optimizer, scaler, batches, prepare, device, amp="none", on_step=None, should_stop=None):
    """Run one optimizer step per batch of `batches` (an iterable of (images_u8, shifts, labels)).
    prepare(images, shifts) -> the normalised input on `device`.  on_step(step_index, loss_tensor, n_images)
    is called after each step with the (detached, device-side) loss; should_stop() is checked after each step.
    Returns the number of steps run."""
    model.train()
    done = 0
    for images, shifts, labels in batches:
        x = prepare(images, shifts)
        y = labels.to(device, non_blocking=True)
        with _autocast(device, amp):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y.to(logits.device))
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if on_step is not None:
            on_step(done, loss.detach(), len(labels))
        done += 1
        if should_stop is not None and should_stop():
            break
    return done


@torch.no_grad()
def evaluate(model, batches, prepare, device, amp="none", num_classes=1000):
    """Held-out metrics over `batches` (iterable of (images_u8, shifts, labels)) -> device tensor
    [loss_sum, top1_correct, top5_correct, count] (sum-reducible across ranks)."""
    model.eval()
    acc = torch.zeros(4, dtype=torch.float64, device=device)
    k = min(5, num_classes)
    for images, shifts, labels in batches:
        x = prepare(images, shifts)
        with _autocast(device, amp):
            logits = model(x)
        logits = logits.float()
        y = labels.to(logits.device)
        topk = logits.topk(k, dim=1).indices
        hit = topk == y[:, None]
        acc += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(),
                            hit[:, :1].any(1).sum().double(), hit.any(1).sum().double(),
                            torch.tensor(float(len(y)), dtype=torch.float64, device=logits.device)]).to(device)
    return acc


# ----------------------------------------------------------------------------------------------- the run

def _loader(dataset, batches, args, generator_seed, pin):
    # A generator of our own: the DataLoader would otherwise draw its base seed from the global RNG, shifting
    # the dropout stream depending on where an epoch's loader was created (breaking exact resume).
    return torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=args.workers,
                                       pin_memory=pin, generator=torch.Generator().manual_seed(generator_seed),
                                       persistent_workers=False, worker_init_fn=_worker_init)


def _worker_init(worker_id):
    # Ctrl-C reaches the whole process group: workers ignore it and the main process stops between steps.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run(args):
    """Train with parsed `args`.  Returns (final metrics dict, the unwrapped model).  Raises Interrupted after a
    Ctrl-C (the checkpoint is written first)."""
    devices, device = resolve_devices(args.devices, _local_rank(args), args.distributed)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    rank, world, local_rank = setup_distributed(args, device)
    try:
        return _run(args, rank, world, devices, device)
    finally:
        if args.distributed:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()


def _run(args, rank, world, devices, device):
    import torch.distributed as dist
    is_main = rank == 0
    ddp = world > 1 or args.distributed

    def log(msg):
        if is_main:
            print("[alexnet.train] " + msg, flush=True)

    if args.threads:
        torch.set_num_threads(args.threads)
    all_devices = list(devices) if devices is not None else [device]
    if args.workers is None:
        args.workers = 0 if device.type == "cpu" else min(8, os.cpu_count() or 1)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not args.deterministic
    if args.deterministic:
        torch.use_deterministic_algorithms(True)
    out = args.out
    ckpt_path = os.path.join(out, CHECKPOINT)
    if is_main:
        os.makedirs(out, exist_ok=True)

    ckpt = None
    if args.resume:
        if not os.path.exists(ckpt_path):
            raise FileNotFoundError("--resume: no checkpoint at %s" % ckpt_path)
        ckpt = load_checkpoint(ckpt_path)
        # Flags left to the recipe continue as the checkpoint's run had them (e.g. its --epochs), not as
        # today's defaults for the data set.
        for name in getattr(args, "recipe_defaults", ()):
            if ckpt["args"].get(name) is not None:
                setattr(args, name, ckpt["args"][name])
        for key in ("data_kind", "data_path", "image_size", "resize", "normalize", "limit_train", "limit_val"):
            if ckpt["args"].get(key) != getattr(args, key):
                warnings.warn("--resume: %s was %r in the checkpoint, now %r" % (key, ckpt["args"].get(key),
                                                                                  getattr(args, key)))

    # Seeds.  The model is initialised from the seed (identical on all ranks; DDP also broadcasts rank 0's);
    # afterwards each rank gets its own stream (dropout masks differ between ranks, as between samples).
    random.seed(args.seed)
    np.random.seed(args.seed % 2**32)
    torch.manual_seed(args.seed)

    data = D.load_data(args.data_kind, args.data_path, image_size=args.image_size, resize=args.resize,
                       flip=args.flip, pca_std=args.pca_std, augment=args.augment, seed=args.seed,
                       limit_train=args.limit_train, limit_val=args.limit_val,
                       stats=ckpt["data_stats"] if ckpt is not None else None)
    model = build_model(args, data.num_classes, devices, device)
    if rank > 0:
        torch.manual_seed(D.sample_seed(args.seed, 2**40, rank))
    log("data %s: %d train / %d held-out images, %d classes, flip=%s, pca_std=%g, augment=%s; "
        "mean %s std %s (0..255)" % (args.data_kind, len(data.train), len(data.val), data.num_classes,
                                     data.train.flip, args.pca_std, args.augment,
                                     [round(v, 2) for v in data.mean], [round(v, 2) for v in data.std]))
    log("model AlexNet(kernels=%s, devices=%s) on %s, %.1fM parameters; world size %d, batch %d per process, "
        "lr %g" % (args.kernels, None if devices is None else [str(d) for d in devices], device,
           sum(p.numel() for p in model.parameters()) / 1e6, world, args.batch_size,
           args.lr if args.lr is not None else default_lr(data.num_classes)))

    if args.lr is None:
        args.lr = default_lr(data.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.1,
                                                           patience=args.patience)
    scaler = torch.amp.GradScaler(device.type) if args.amp == "fp16" else None

    epoch, step_in_epoch, step = 0, 0, 0
    epoch_acc = {"loss_sum": 0.0, "images": 0, "train_time": 0.0}
    elapsed_before = 0.0
    history = []
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler") is not None:
            scaler.load_state_dict(ckpt["scaler"])
        epoch, step_in_epoch, step = ckpt["epoch"], ckpt["step_in_epoch"], ckpt["step"]
        if step_in_epoch and (ckpt["world_size"] != world or ckpt["args"]["batch_size"] != args.batch_size):
            raise ValueError("--resume mid-epoch needs the same world size and --batch-size as the checkpoint "
                             "(%d x %d), got %d x %d" % (ckpt["world_size"], ckpt["args"]["batch_size"], world,
                                                         args.batch_size))
        if ckpt["args"]["seed"] != args.seed:
            warnings.warn("--resume: the checkpoint was trained with --seed %d, continuing with %d"
                          % (ckpt["args"]["seed"], args.seed))
        epoch_acc = dict(ckpt["epoch_acc"])
        elapsed_before = ckpt["elapsed"]
        history = [h for h in ckpt["history"]]
        rng = ckpt["rng"]
        if ckpt["world_size"] == world:
            _set_rng_state(rng[rank])
        else:
            warnings.warn("--resume: world size changed (%d -> %d): RNG streams reseeded"
                          % (ckpt["world_size"], world))
            torch.manual_seed(D.sample_seed(args.seed, 2**41 + step, rank))
        finished = _finished(args, epoch, step)
        if finished:
            last = history[-1] if history else {}
            top1 = ", held-out top-1 %.2f%%" % (100 * last["top1"]) if "top1" in last else ""
            if finished.startswith("reached"):
                how = "resume with a larger --max-steps or without it, e.g. --resume --max-steps %d" % (step + 100)
            else:
                how = ("resume with more epochs, e.g. --resume --epochs %d (the lr schedule and the data order "
                       "continue from the checkpoint)" % (max(epoch, args.epochs) + 5))
            log("nothing left to do: the checkpoint in %s %s (step %d%s). To train longer, %s"
                % (out, finished, step, top1, how))
        else:
            log("resumed from %s: epoch %d of %d, step %d (%d into the epoch)"
                % (ckpt_path, epoch + 1, args.epochs, step, step_in_epoch))
        del ckpt

    # Logs: keep what the checkpoint covers (a crash after the last checkpoint may have left more).
    metrics_path, steps_path = os.path.join(out, "metrics.jsonl"), os.path.join(out, "steps.jsonl")
    if is_main:
        if args.resume:
            _atomic_write_text(metrics_path, "".join(json.dumps(h) + "\n" for h in history))
            kept = [r for r in _read_jsonl(steps_path) if r["step"] < step]   # steps 0 .. step-1 are done
            _atomic_write_text(steps_path, "".join(json.dumps(r) + "\n" for r in kept))
        else:
            for pth in (metrics_path, steps_path):
                if os.path.exists(pth):
                    os.unlink(pth)

    core = model
    if args.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(model, device_ids=[device.index] if (devices is None and device.type == "cuda") else None)
    train_model = torch.compile(model) if args.compile else model
    eval_model = torch.compile(core) if args.compile else core

    mean, std = data.mean, (data.std if args.normalize == "meanstd" else None)
    pin = device.type == "cuda"

    def prepare(images, shifts):
        return D.normalize_batch(images, shifts, mean, std, device, channels_last=args.channels_last,
                                 non_blocking=pin)

    stop = _StopFlag()
    t_start = time.perf_counter()
    pending = []          # (step, epoch, loss tensor) not yet read back
    result = history[-1] if history else {}

    def barrier():
        if ddp:
            dist.barrier()

    def flush_losses():
        nonlocal pending
        if not pending:
            return None
        losses = torch.stack([p[2] for p in pending]).to(device)
        if ddp:
            dist.all_reduce(losses)
            losses /= world
        values = losses.tolist()
        if is_main:
            lr = optimizer.param_groups[0]["lr"]
            with open(steps_path, "a") as f:
                for (s, e, _), v in zip(pending, values):
                    f.write(json.dumps({"step": s, "epoch": e + 1, "loss": v, "lr": lr}) + "\n")
        epoch_acc["loss_sum"] += sum(values)
        pending = []
        return values[-1]

    def stop_requested():
        flag = torch.tensor([1.0 if stop.requested else 0.0], device=device)
        if ddp:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def checkpoint(epoch_, step_in_epoch_):
        rng = _rng_state(all_devices)
        if ddp:
            gathered = [None] * world
            dist.all_gather_object(gathered, rng)
            rng = gathered
        else:
            rng = [rng]
        if is_main:
            save_checkpoint(ckpt_path, {
                "model": core.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                "epoch": epoch_, "step_in_epoch": step_in_epoch_, "step": step, "epoch_acc": dict(epoch_acc),
                "elapsed": elapsed_before + time.perf_counter() - t_start, "history": history, "rng": rng,
                "world_size": world, "args": {k: v for k, v in vars(args).items()},
                "data_stats": data.stats, "num_classes": data.num_classes, "classes": data.classes})
        barrier()

    def held_out():
        batches = D.eval_batches(len(data.val), args.batch_size, rank, world)
        acc = evaluate(eval_model, _loader(data.val, batches, args, 0, pin), prepare, device, args.amp,
                       data.num_classes)
        if ddp:
            dist.all_reduce(acc)
        loss_sum, c1, c5, n = acc.tolist()
        n = max(n, 1.0)
        return {"val_loss": loss_sum / n, "top1": c1 / n, "top5": c5 / n}

    def record(epoch_, partial):
        nonlocal result
        steps_done = max(step_in_epoch, 1)
        row = {"epoch": epoch_ + 1, "step": step, "train_loss": epoch_acc["loss_sum"] / steps_done}
        row.update(held_out())
        row.update({"lr": optimizer.param_groups[0]["lr"],
                    "images_per_s": epoch_acc["images"] * world / max(epoch_acc["train_time"], 1e-9),
                    "elapsed": elapsed_before + time.perf_counter() - t_start})
        if partial:
            row["partial"] = True
        if is_main:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            plot_curves([h for h in history if not h.get("partial")] + [row], os.path.join(out, "curves.png"))
            log("epoch %d%s  step %d  train_loss %.4f  val_loss %.4f  top1 %.2f%%  top5 %.2f%%  lr %.2g  "
                "%.1f img/s  %.0fs" % (epoch_ + 1, " (partial)" if partial else "", step, row["train_loss"],
                                      row["val_loss"], 100 * row["top1"], 100 * row["top5"], row["lr"],
                                      row["images_per_s"], row["elapsed"]))
        result = row
        return row

    interrupted = False
    step_at_start = step
    with stop:
        try:
            while epoch < args.epochs:
                if args.max_steps is not None and step >= args.max_steps:
                    break
                if stop.requested if not ddp else stop_requested():   # Ctrl-C during the last evaluation
                    interrupted = True
                    break
                if step_in_epoch == 0 and epoch + 1 in args.lr_drops:
                    # At the epoch's first step only: a run resumed mid-epoch has the drop in its optimizer state.
                    for group in optimizer.param_groups:
                        group["lr"] *= 0.1
                    log("epoch %d: lr divided by 10 (--lr-drops): %g" % (epoch + 1, optimizer.param_groups[0]["lr"]))
                batches = D.epoch_batches(len(data.train), args.batch_size, args.seed, epoch, rank, world)
                todo = batches[step_in_epoch:]
                if args.max_steps is not None:
                    todo = todo[:args.max_steps - step]
                loader = _loader(data.train, todo, args, D.sample_seed(args.seed, epoch, 2**42 + rank), pin)
                bar = _progress(len(batches), step_in_epoch, "epoch %d/%d" % (epoch + 1, args.epochs),
                                is_main and args.progress)
                t_mark = time.perf_counter()
                n_mark = 0

                def on_step(i, loss, n):
                    nonlocal step, step_in_epoch, t_mark, n_mark
                    pending.append((step, epoch, loss))
                    step += 1
                    step_in_epoch += 1
                    epoch_acc["images"] += n
                    n_mark += n
                    if bar is not None:
                        bar.update(1)
                    if step_in_epoch % args.log_every == 0 or step_in_epoch == len(batches):
                        last = flush_losses()
                        now = time.perf_counter()
                        epoch_acc["train_time"] += now - t_mark
                        rate = n_mark * world / max(now - t_mark, 1e-9)
                        t_mark, n_mark = now, 0
                        if bar is not None:
                            bar.set_postfix(loss="%.4f" % last, img_s="%.1f" % rate)
                        elif is_main:
                            log("epoch %d step %d/%d  loss %.4f  %.1f img/s"
                                % (epoch + 1, step_in_epoch, len(batches), last, rate))

                def should_stop():
                    if ddp:  # ranks must agree: check at read-back points only (one small all_reduce)
                        return (step_in_epoch % args.log_every == 0) and stop_requested()
                    return stop.requested

                train_steps(train_model, optimizer, scaler, loader, prepare, device, args.amp, on_step, should_stop)
                flush_losses()
                epoch_acc["train_time"] += time.perf_counter() - t_mark
                if bar is not None:
                    bar.close()
                interrupted = stop.requested if not ddp else stop_requested()
                if step_in_epoch == len(batches):
                    row = record(epoch, partial=False)
                    history.append(row)
                    scheduler.step(row["top1"])
                    epoch, step_in_epoch = epoch + 1, 0
                    epoch_acc = {"loss_sum": 0.0, "images": 0, "train_time": 0.0}
                    checkpoint(epoch, 0)
                else:  # --max-steps or Ctrl-C mid-epoch: evaluate, checkpoint the position
                    if not interrupted:
                        record(epoch, partial=True)
                    checkpoint(epoch, step_in_epoch)
                    break
        except KeyboardInterrupt:
            # A second Ctrl-C, or one outside the main thread's handler: the state may be mid-update, so the last
            # checkpoint stays as it is.
            log("aborted; %s is the last complete checkpoint" % ckpt_path)
            raise
    ran_steps = step > step_at_start
    if interrupted:
        log("interrupted at step %d; checkpoint written to %s (--resume continues)" % (step, ckpt_path))
        raise Interrupted(ckpt_path)
    if not result and is_main and not args.resume:
        log("nothing to do (step %d, epoch %d of %d)" % (step, epoch, args.epochs))
    elif is_main and ran_steps and "top1" in result:
        size = os.path.getsize(ckpt_path) if os.path.exists(ckpt_path) else 0
        log("done: %s, held-out top-1 %.2f%%, top-5 %.2f%% after %d steps (%.0f s); in %s: %s (%.0f MB), "
            "metrics.jsonl, steps.jsonl, curves.png" % (
                "epoch %d of %d" % (epoch, args.epochs) if not result.get("partial") else
                "stopped at --max-steps %d" % step, 100 * result["top1"], 100 * result["top5"], step,
                result["elapsed"], out, CHECKPOINT, size / 1e6))
    result = dict(result)
    result["out"] = out
    return result, core


def _finished(args, epoch, step):
    """Why a run at (epoch, step) has nothing left to do under args ('' if it has)."""
    if epoch >= args.epochs:
        return "finished all %d epochs" % args.epochs if epoch == args.epochs else \
            "is at epoch %d, past --epochs %d" % (epoch, args.epochs)
    if args.max_steps is not None and step >= args.max_steps:
        return "reached --max-steps %d" % args.max_steps
    return ""


def main(argv=None):
    """CLI entry point: returns the final metrics dict (the last metrics.jsonl row); after Ctrl-C exits with
    status 130 once the checkpoint is written."""
    args = parse_args(argv)
    try:
        result, _ = run(args)
    except Interrupted:
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    return result


if __name__ == "__main__":
    main()
