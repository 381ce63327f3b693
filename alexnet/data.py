"""Data for `python -m alexnet.train`: the datasets, the paper's augmentation, the per-epoch data order.

    from alexnet.data import load_data, epoch_batches
    data = load_data("digits", image_size=227)           # Data(train, val, num_classes, mean, std, ...)
    batches = epoch_batches(len(data.train), batch_size=128, seed=0, epoch=3)   # lists of (epoch, index)
    images_u8, colour_shift, labels = data.train[batches[0][0]]

Sources (each gives uint8 images already resized to `resize` x `resize`, default 256):
  digits          scikit-learn's bundled 8x8 handwritten digits (real data, 1797 images, 10 classes), upsampled
                  bilinearly and replicated to 3 channels; a fixed stratified 20% held-out split (1437 / 360).
  fashion-mnist   the four IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],
                  t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]) in a folder, parsed with numpy;
                  held-out = the 10k test set; 28x28 upsampled, 3 channels.
  folder          torchvision ImageFolder: PATH/train and PATH/val, or one folder of class folders split 80/20;
                  shorter side resized to `resize`, centre `resize` x `resize` (the paper's preprocessing).

Augmentation (paper section 4.1): random `image_size` crops of the `resize` image, optional horizontal flips,
PCA colour noise (`PCAColorNoise`).  Evaluation: the centre crop, no noise.

Input scale (paper section 2): "we trained our network on the (centered) raw RGB values of the pixels" -- pixel
values 0..255 minus the training set's per-channel mean (normalize="mean", the default).  With the paper's
N(0, 0.01) initialisation and unit biases the image's share of the activations is small to begin with (at
init the logits hardly depend on the image); unit-variance inputs (normalize="meanstd", the modern convention)
would shrink it by another factor of the pixel std (~80 on digits).  Mean subtraction and scaling
happen on the device (`normalize_batch`), so the loader ships uint8 images (4x less host work and
transfer than float).  The statistics (mean, std, PCA) come from a fixed sample of the training set.

Determinism: every random choice of sample i in epoch e comes from its own generator seeded with
mix(seed, e, i), and the order of epoch e from a generator seeded with seed + e (DistributedSampler's rule).
So a run is a pure function of the seed -- independent of --workers, and a resumed run (which skips the batches
already done in its epoch) sees exactly the images an uninterrupted run would.  (torchvision's RandomCrop /
RandomHorizontalFlip draw from the global RNG, so the crop and flip are a few lines of our own here.)
"""
import gzip
import math
import os
import struct
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Data", "load_data", "epoch_batches", "eval_batches", "PCAColorNoise", "AugmentedDataset",
           "normalize_batch", "read_idx", "sample_seed", "DATASETS"]

DATASETS = ("digits", "fashion-mnist", "folder")
_MASK64 = (1 << 64) - 1


def _splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def sample_seed(seed, epoch, index):
    """The seed of sample `index`'s augmentation in `epoch` (63 bits, well mixed)."""
    return _splitmix64(_splitmix64(_splitmix64(seed & _MASK64) ^ (epoch & _MASK64)) ^ (index & _MASK64)) >> 1


def _require(module, purpose):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise RuntimeError("%s needs %s, which is not installed here (%s): pip install %s"
                           % (purpose, module.split(".")[0], exc,
                              {"sklearn": "scikit-learn"}.get(module.split(".")[0], module.split(".")[0]))) from exc


# ----------------------------------------------------------------------------------------------- sources

class ArraySource:
    """Grayscale or RGB uint8 arrays (N, h, w) or (N, h, w, 3) -> uint8 (3, size, size) tensors, upsampled
    bilinearly on access (cheap next to the network, and 118 MB less memory than storing them upsampled)."""

    def __init__(self, images, labels, size):
        images = np.ascontiguousarray(images)
        if images.dtype != np.uint8:
            raise TypeError("ArraySource wants uint8 images, got %s" % images.dtype)
        self.images = torch.from_numpy(images)
        self.labels = [int(v) for v in labels]
        self.size = size

    def __len__(self):
        return len(self.labels)

    def image(self, i):
        return self.images_at([i])[0]

    def images_at(self, indices):
        """uint8 (len(indices), 3, size, size): image(i) for each index, upsampled in one call (one parallel
        region per op, not one per image: on a busy machine each region can wait a scheduler quantum)."""
        imgs = self.images[list(indices)]
        imgs = imgs.unsqueeze(1) if imgs.dim() == 3 else imgs.permute(0, 3, 1, 2)
        if imgs.shape[-1] != self.size or imgs.shape[-2] != self.size:
            imgs = F.interpolate(imgs.float(), size=(self.size, self.size), mode="bilinear",
                                 align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
        return imgs.expand(-1, 3, -1, -1) if imgs.shape[1] == 1 else imgs

    def label(self, i):
        return self.labels[i]


class FolderSource:
    """(path, label) pairs -> uint8 (3, size, size): shorter side resized to `size`, centre crop (PIL +
    torchvision.transforms)."""

    def __init__(self, samples, size):
        self.samples = list(samples)
        self.size = size
        self._tf = None

    def __len__(self):
        return len(self.samples)

    def __getstate__(self):  # the transform is rebuilt in each DataLoader worker
        state = dict(self.__dict__)
        state["_tf"] = None
        return state

    def image(self, i):
        if self._tf is None:
            T = _require("torchvision.transforms", "--data folder")
            self._tf = T.Compose([T.Resize(self.size), T.CenterCrop(self.size), T.PILToTensor()])
        from torchvision.datasets.folder import default_loader
        return self._tf(default_loader(self.samples[i][0]).convert("RGB"))

    def label(self, i):
        return self.samples[i][1]


class Subset:
    def __init__(self, source, indices):
        self.source, self.indices = source, list(indices)

    def __len__(self):
        return len(self.indices)

    def image(self, i):
        return self.source.image(self.indices[i])

    def images_at(self, indices):
        return _images_at(self.source, [self.indices[i] for i in indices])

    def label(self, i):
        return self.source.label(self.indices[i])


def _images_at(source, indices):
    """uint8 (n, 3, S, S) images of a source: batched when it can, else one by one."""
    if hasattr(source, "images_at"):
        return source.images_at(indices)
    return torch.stack([source.image(i) for i in indices])


# ----------------------------------------------------------------------------------------------- transforms

class PCAColorNoise:
    """The paper's "fancy PCA" colour augmentation: add  eigvec @ (alpha * eigval),  alpha ~ N(0, std^2) per image
    and component, to every pixel.  eigvec (3, 3): columns = principal axes of the training set's RGB pixel
    covariance; eigval (3,): the magnitudes along them.  `rgb_statistics` gives, as "eigval", the square roots of
    the covariance's eigenvalues (the standard deviation along each axis, in pixel units) -- the convention of
    Caffe / fb.resnet.torch / torchvision's reference scripts: the paper's "magnitudes proportional to the
    eigenvalues" is only unit-free that way (literal eigenvalues of 0..255 pixels would shift colours by
    thousands).  So the noise is ~0.1 standard deviation of the image colour distribution.  On grayscale-as-RGB
    data only the first axis (1, 1, 1)/sqrt(3) has a non-zero magnitude: a brightness jitter."""

    def __init__(self, eigvec, eigval, std=0.1):
        self.eigvec = torch.as_tensor(eigvec, dtype=torch.float32)
        self.eigval = torch.as_tensor(eigval, dtype=torch.float32)
        self.std = float(std)

    def sample(self, generator=None):
        """The (3,) RGB shift of one image."""
        if self.std == 0:
            return torch.zeros(3)
        alpha = torch.randn(3, generator=generator) * self.std
        return self.eigvec @ (alpha * self.eigval)

    def __call__(self, img, generator=None):
        """img: float (3, H, W) (same units as eigval) -> img + shift (not clamped, as in the paper)."""
        return img + self.sample(generator).to(img.dtype)[:, None, None]

    def __repr__(self):
        return "PCAColorNoise(eigval=%s, std=%g)" % ([round(v, 5) for v in self.eigval.tolist()], self.std)


def random_crop(img, size, generator):
    h, w = img.shape[-2:]
    top = int(torch.randint(0, h - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - size + 1, (1,), generator=generator))
    return img[..., top:top + size, left:left + size]


def center_crop(img, size):
    h, w = img.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return img[..., top:top + size, left:left + size]


class AugmentedDataset(torch.utils.data.Dataset):
    """A map-style dataset over a source.  train=True: keys are (epoch, index); each sample gets a random crop,
    a flip with probability 1/2 (if flip) and a PCA colour shift, all drawn from a generator seeded with
    sample_seed(seed, epoch, index).  train=False (or augment=False): keys are indices (or (epoch, index)),
    centre crop, zero shift.  Items: (uint8 (3, S, S) image, float32 (3,) colour shift, int label)."""

    def __init__(self, source, image_size, train, flip=False, pca=None, seed=0, augment=True):
        self.source, self.image_size, self.train = source, image_size, train
        self.flip, self.pca, self.seed, self.augment = flip, pca, seed, augment

    def __len__(self):
        return len(self.source)

    def __getitem__(self, key):
        epoch, i = key if isinstance(key, tuple) else (0, key)
        img = self.source.image(i)
        shift = torch.zeros(3)
        if self.train and self.augment:
            g = torch.Generator().manual_seed(sample_seed(self.seed, epoch, i))
            img = random_crop(img, self.image_size, g)
            if self.flip and bool(torch.randint(0, 2, (1,), generator=g)):
                img = img.flip(-1)
            if self.pca is not None:
                shift = self.pca.sample(g)
        else:
            img = center_crop(img, self.image_size)
        return img.contiguous(), shift, self.source.label(i)


def normalize_batch(images_u8, shifts, mean, std=None, device="cpu", channels_last=False, non_blocking=False):
    """uint8 (N, 3, H, W) + colour shifts (N, 3) (pixel units) -> (x + shift - mean) [/ std] as float32 on
    `device`; std=None: centred raw pixels (the paper)."""
    x = images_u8.to(device, non_blocking=non_blocking)
    shifts = shifts.to(device, non_blocking=non_blocking)
    mean = torch.as_tensor(mean, device=device, dtype=torch.float32)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x = x.float() + (shifts - mean)[:, :, None, None]
    if std is not None:
        x = x / torch.as_tensor(std, device=device, dtype=torch.float32)[None, :, None, None]
    return x


def rgb_statistics(dataset, max_samples=512):
    """Per-channel mean and std, and the RGB covariance's eigenvectors and the square roots of its eigenvalues
    (descending; "eigval", for PCAColorNoise), in pixel units 0..255, of the evaluation view (centre crop) of up
    to max_samples training images chosen with a fixed generator."""
    n = len(dataset.source)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(12345))[:max_samples].tolist()
    s = torch.zeros(3, dtype=torch.float64)
    ss = torch.zeros(3, 3, dtype=torch.float64)
    count = 0
    for start in range(0, len(order), 64):   # in chunks: a few large ops instead of many small ones
        imgs = center_crop(_images_at(dataset.source, order[start:start + 64]), dataset.image_size)
        img = imgs.transpose(0, 1).reshape(3, -1).to(torch.float64)
        s += img.sum(1)
        ss += img @ img.T
        count += img.shape[1]
    mean = s / count
    cov = ss / count - torch.outer(mean, mean)
    std = cov.diagonal().clamp_min(1e-12).sqrt()
    eigval, eigvec = torch.linalg.eigh(cov)
    eigval, eigvec = eigval.flip(0).clamp_min(0).sqrt(), eigvec.flip(1)
    return dict(mean=mean.float().tolist(), std=std.float().tolist(), eigval=eigval.float().tolist(),
                eigvec=eigvec.float().tolist())


# ----------------------------------------------------------------------------------------------- loaders

def read_idx(path):
    """An IDX file (MNIST / Fashion-MNIST format, optionally gzipped) as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError("%s is not an IDX file (bad magic %r)" % (path, raw[:4]))
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in dtypes:
        raise ValueError("%s: unknown IDX element type 0x%02x" % (path, raw[2]))
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(bytearray(raw), dtype=dtypes[raw[2]], offset=4 + 4 * ndim)  # writable
    if data.size != math.prod(dims):
        raise ValueError("%s: header says %s elements, file holds %d" % (path, dims, data.size))
    return data.reshape(dims)


def _idx_file(root, stem):
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if os.path.exists(os.path.join(root, name)):
            return os.path.join(root, name)
    raise FileNotFoundError("--data fashion-mnist %s: no %s[.gz] there (expected the four IDX files "
                            "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                            "t10k-labels-idx1-ubyte, optionally gzipped)" % (root, stem))


def _digits(resize):
    datasets = _require("sklearn.datasets", "--data digits")
    model_selection = _require("sklearn.model_selection", "--data digits")
    d = datasets.load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)   # values 0..16 -> 0..255
    idx = np.arange(len(d.target))
    tr, va = model_selection.train_test_split(idx, test_size=0.2, stratify=d.target, random_state=0)
    src = ArraySource(images, d.target, resize)
    return Subset(src, tr), Subset(src, va), 10, [str(i) for i in range(10)]


def _fashion(root, resize):
    tr = ArraySource(read_idx(_idx_file(root, "train-images-idx3-ubyte")),
                     read_idx(_idx_file(root, "train-labels-idx1-ubyte")), resize)
    va = ArraySource(read_idx(_idx_file(root, "t10k-images-idx3-ubyte")),
                     read_idx(_idx_file(root, "t10k-labels-idx1-ubyte")), resize)
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
             "Ankle boot"]
    return tr, va, 10, names


def _folder(root, resize):
    folder = _require("torchvision.datasets", "--data folder")
    if os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "val")):
        tr = folder.ImageFolder(os.path.join(root, "train"))
        va = folder.ImageFolder(os.path.join(root, "val"))
        if va.class_to_idx != tr.class_to_idx:
            raise ValueError("--data folder %s: train/ and val/ hold different class folders" % root)
        return FolderSource(tr.samples, resize), FolderSource(va.samples, resize), len(tr.classes), tr.classes
    ds = folder.ImageFolder(root)
    perm = torch.randperm(len(ds.samples), generator=torch.Generator().manual_seed(0)).tolist()
    n_val = max(1, len(perm) // 5)
    src = FolderSource(ds.samples, resize)
    return Subset(src, sorted(perm[n_val:])), Subset(src, sorted(perm[:n_val])), len(ds.classes), ds.classes


def _limit(source, n):
    if n is None or n >= len(source):
        return source
    perm = torch.randperm(len(source), generator=torch.Generator().manual_seed(1)).tolist()
    return Subset(source, sorted(perm[:n]))


@dataclass
class Data:
    train: AugmentedDataset
    val: AugmentedDataset
    num_classes: int
    classes: list
    stats: dict = field(default_factory=dict)   # mean, std, eigval, eigvec (lists; pixel units 0..255)

    @property
    def mean(self):
        return self.stats["mean"]

    @property
    def std(self):
        return self.stats["std"]


def load_data(kind="digits", path=None, image_size=227, resize=256, flip=None, pca_std=0.1, augment=True,
              seed=0, limit_train=None, limit_val=None, stats=None, stats_samples=512):
    """Build the train/held-out datasets.  flip=None: the dataset's default (on for folder data, off for
    digits and fashion-mnist, where a mirrored digit or garment is a different glyph / an unnatural image).
    stats: reuse precomputed normalisation/PCA statistics (e.g. from a checkpoint)."""
    if kind not in DATASETS:
        raise ValueError("unknown dataset %r (choose from %s)" % (kind, ", ".join(DATASETS)))
    if resize < image_size:
        raise ValueError("resize (%d) must be >= image_size (%d)" % (resize, image_size))
    if kind == "digits":
        tr, va, num_classes, classes = _digits(resize)
    else:
        if not path:
            raise ValueError("--data %s needs a PATH" % kind)
        if not os.path.isdir(path):
            raise FileNotFoundError("--data %s %s: no such directory" % (kind, path))
        tr, va, num_classes, classes = (_fashion if kind == "fashion-mnist" else _folder)(path, resize)
    tr, va = _limit(tr, limit_train), _limit(va, limit_val)
    if flip is None:
        flip = kind == "folder"
    train = AugmentedDataset(tr, image_size, train=True, flip=flip, seed=seed, augment=augment)
    val = AugmentedDataset(va, image_size, train=False)
    if stats is None:
        stats = rgb_statistics(train, stats_samples)
    if augment and pca_std > 0:
        train.pca = PCAColorNoise(torch.tensor(stats["eigvec"]), torch.tensor(stats["eigval"]), pca_std)
    return Data(train, val, num_classes, list(classes), stats)


# ----------------------------------------------------------------------------------------------- data order

def epoch_batches(n, batch_size, seed, epoch, rank=0, world_size=1, shuffle=True):
    """The training batches of `rank` in `epoch`: lists of (epoch, index) keys.  The order is
    DistributedSampler's (a permutation from a generator seeded with seed + epoch, dealt out round-robin:
    rank r gets positions r, r + W, r + 2W, ...), so with W ranks of batch B, step k of all ranks together
    covers exactly the samples of step k of one process with batch W * B.  Incomplete batches are dropped
    (every step has the same size; the dropped samples change from epoch to epoch)."""
    sampler = torch.utils.data.DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=shuffle,
                                                  seed=seed, drop_last=True)
    sampler.set_epoch(epoch)
    order = list(sampler)
    steps = len(order) // batch_size
    if steps == 0:
        raise ValueError("the training set (%d samples over %d process(es)) is smaller than one batch of %d"
                         % (n, world_size, batch_size))
    return [[(epoch, i) for i in order[s * batch_size:(s + 1) * batch_size]] for s in range(steps)]


def eval_batches(n, batch_size, rank=0, world_size=1):
    """This rank's share of the held-out set (indices rank, rank + W, ...; nothing padded or repeated)."""
    mine = list(range(rank, n, world_size))
    return [mine[s:s + batch_size] for s in range(0, len(mine), batch_size)]
