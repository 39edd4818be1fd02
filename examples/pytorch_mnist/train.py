#!/usr/bin/env python3
"""A small CNN on Fashion-MNIST in plain PyTorch, tuned by hpo.

Started by an hpo worker (``[trainer] kind = "command"``, see study.toml) it
reads its hyperparameters from the trial, reports ``val_loss`` and
``val_accuracy`` after every epoch, and when hpo answers PAUSE (an ASHA rung)
saves the model, the optimiser and the epoch into the trial's checkpoint
folder and exits; a promoted trial is started again with that folder
restored and resumes from the epoch after it.

Run by hand (no hpo worker) it trains once with the defaults or the flags::

    python train.py --epochs 1 --train-subset 5000

Every line it prints becomes the trial's log.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import hpo
import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
CHECKPOINT = "checkpoint.pt"
# Fashion-MNIST's pixel mean and standard deviation (scaled to [0, 1]).
MEAN, STD = 0.2860, 0.3530


@dataclass
class Config:
    """The hyperparameters hpo searches (the study's [params])."""

    lr: float = 1e-3
    batch_size: int = 128
    dropout: float = 0.25
    hidden: int = 128


# ---------- data ----------


def read_idx(path: Path) -> Tensor:
    """An IDX file (optionally gzipped) as a uint8 tensor of its shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return torch.frombuffer(bytearray(data[4 + 4 * ndim :]), dtype=torch.uint8).reshape(dims)


def find_data_dir(flag: str | None) -> Path:
    """--data, else $HPO_FASHION_MNIST, else $HPO_DATASETS/fashion-mnist, else
    Debian's dataset-fashion-mnist folder."""
    candidates = [flag, os.environ.get("HPO_FASHION_MNIST")]
    if os.environ.get("HPO_DATASETS"):
        candidates.append(os.path.join(os.environ["HPO_DATASETS"], "fashion-mnist"))
    candidates.append(DEFAULT_DATA)
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    raise SystemExit(
        f"no Fashion-MNIST folder found (tried: {', '.join(c for c in candidates if c)}): "
        "pass --data DIR or set HPO_FASHION_MNIST to a folder holding "
        "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
        "and t10k-labels-idx1-ubyte.gz"
    )


def load_split(folder: Path, prefix: str, limit: int) -> tuple[Tensor, Tensor]:
    """Images as normalised [n, 1, 28, 28] floats and labels as int64; the first
    ``limit`` examples when limit > 0."""

    def file(stem: str) -> Path:
        for name in (f"{stem}.gz", stem):
            if (folder / name).is_file():
                return folder / name
        raise SystemExit(f"{folder} has no {stem}.gz")

    images = read_idx(file(f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(file(f"{prefix}-labels-idx1-ubyte"))
    if limit > 0:
        images, labels = images[:limit], labels[:limit]
    x = (images.float().div_(255.0).sub_(MEAN).div_(STD)).unsqueeze(1)
    return x, labels.long()


# ---------- model ----------


class Net(nn.Module):
    """Two 3x3 convolutions with max-pooling, then one hidden layer."""

    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 7 * 7, hidden)
        self.fc2 = nn.Linear(hidden, 10)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = self.dropout(F.relu(self.fc1(x.flatten(1))))
        return self.fc2(x)


def evaluate(model: nn.Module, x: Tensor, y: Tensor, device: torch.device) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over (x, y)."""
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), 1000):
            xb, yb = x[i : i + 1000].to(device), y[i : i + 1000].to(device)
            out = model(xb)
            loss_sum += F.cross_entropy(out, yb, reduction="sum").item()
            correct += int((out.argmax(1) == yb).sum().item())
    return loss_sum / len(x), correct / len(x)


# ---------- checkpoints ----------


def save_checkpoint(
    trial: hpo.Trial, model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator, epoch: int
) -> None:
    """Model, optimiser, shuffle generator and epoch into the trial's
    checkpoint folder, written atomically."""
    buf = io.BytesIO()
    torch.save(
        {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "generator": gen.get_state(),
            "rng": torch.get_rng_state(),
        },
        buf,
    )
    path = trial.save_bytes(buf.getvalue(), CHECKPOINT)
    print(f"saved checkpoint after epoch {epoch} to {path}", flush=True)


def load_checkpoint(
    trial: hpo.Trial, model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator
) -> int:
    """Restores what the previous segment saved; returns its epoch."""
    data = trial.load_bytes(CHECKPOINT)
    if data is None:
        raise SystemExit(
            f"resuming after step {trial.start_step} but {trial.checkpoint_dir} has no {CHECKPOINT}"
        )
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"])
    torch.set_rng_state(state["rng"])
    epoch = int(state["epoch"])
    if epoch != trial.start_step:
        print(
            f"warning: the checkpoint is of epoch {epoch}, hpo resumes after step {trial.start_step}",
            flush=True,
        )
    return epoch


# ---------- training ----------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help=f"Fashion-MNIST folder (default: $HPO_FASHION_MNIST or {DEFAULT_DATA})")
    p.add_argument("--train-subset", type=int, default=0, help="train on the first N examples (0: all 60000)")
    p.add_argument(
        "--val-subset", type=int, default=0, help="validate on the first N test examples (0: all 10000)"
    )
    p.add_argument("--epochs", type=int, default=3, help="standalone runs only: hpo sets the budget")
    p.add_argument("--seed", type=int, default=0, help="standalone runs only: hpo sets the seed")
    p.add_argument("--lr", type=float, default=Config.lr)
    p.add_argument("--batch-size", type=int, default=Config.batch_size)
    p.add_argument("--dropout", type=float, default=Config.dropout)
    p.add_argument("--hidden", type=int, default=Config.hidden)
    p.add_argument("--stop-check", type=int, default=50, help="ask hpo whether to stop every N batches")
    args = p.parse_args()

    try:
        trial: hpo.Trial | None = hpo.Trial.from_env()
    except hpo.NotInTrialError:
        trial = None

    if trial is None:
        print("not started by an hpo worker: one standalone run with the flags' values", flush=True)
        cfg = Config(lr=args.lr, batch_size=args.batch_size, dropout=args.dropout, hidden=args.hidden)
        seed, first, last = args.seed, 1, args.epochs
    else:
        if trial.resource != "epochs":
            raise SystemExit(
                f'this example counts steps in epochs; the study uses resource = "{trial.resource}"'
            )
        cfg = Config(
            lr=trial.get_float("lr", Config.lr),
            batch_size=trial.get_int("batch_size", Config.batch_size),
            dropout=trial.get_float("dropout", Config.dropout),
            hidden=trial.get_int("hidden", Config.hidden),
        )
        seed, first, last = trial.seed, trial.start_step + 1, trial.max_resource
        print(
            f"trial {trial.number} of study {trial.study_name!r} (attempt {trial.attempt}): {cfg}, "
            f"epochs {first}..{trial.budget} of {last}",
            flush=True,
        )

    torch.manual_seed(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    folder = find_data_dir(args.data)
    t0 = time.time()
    x_train, y_train = load_split(folder, "train", args.train_subset)
    x_val, y_val = load_split(folder, "t10k", args.val_subset)
    print(
        f"data: {len(x_train)} training and {len(x_val)} validation images from {folder} "
        f"({time.time() - t0:.1f}s); device {device}",
        flush=True,
    )

    model = Net(cfg.hidden, cfg.dropout).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)  # the epochs' shuffles
    if trial is not None and trial.is_resumed:
        done = load_checkpoint(trial, model, opt, gen)
        print(f"resumed from the checkpoint of epoch {done}", flush=True)

    val_loss = val_acc = float("nan")
    for epoch in range(first, last + 1):
        t0 = time.time()
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        loss_sum, seen = 0.0, 0
        for b, i in enumerate(range(0, len(order), cfg.batch_size)):
            idx = order[i : i + cfg.batch_size]
            xb, yb = x_train[idx].to(device), y_train[idx].to(device)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            seen += len(idx)
            # A cancelled study should not wait for the end of a long epoch.
            polling = trial is not None and args.stop_check > 0 and (b + 1) % args.stop_check == 0
            if polling and trial is not None and trial.should_stop():
                print(f"hpo asked to stop during epoch {epoch}", flush=True)
                return 0
        val_loss, val_acc = evaluate(model, x_val, y_val, device)
        train_loss = loss_sum / max(seen, 1)
        print(
            f"epoch {epoch}/{last}: train_loss {train_loss:.4f}, val_loss {val_loss:.4f}, "
            f"val_accuracy {val_acc:.4f} ({time.time() - t0:.1f}s)",
            flush=True,
        )
        if trial is None:
            continue
        decision = trial.report(
            epoch, {"train_loss": train_loss, "val_loss": val_loss, "val_accuracy": val_acc}
        )
        if decision is hpo.Decision.PAUSE:
            # A rung: save, exit 0; hpo resumes the trial later if it is promoted.
            save_checkpoint(trial, model, opt, gen, epoch)
            print(f"paused after epoch {epoch}", flush=True)
            return 0
        if decision is hpo.Decision.STOP:
            print(f"stopped by hpo after epoch {epoch}", flush=True)
            return 0
    if trial is None:
        print(f"final: val_loss {val_loss:.4f}, val_accuracy {val_acc:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
