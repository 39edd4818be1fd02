"""The same training as hpo's tch trainers, written in plain PyTorch, for
`cargo bench -p hpo-worker --bench train_throughput`: one JSON line per
model with the samples per second of each epoch.

Usage: python pytorch_baseline.py DATA_DIR MODEL EPOCHS BATCH [TRAIN_N]
MODEL is "mlp" (784-256-256-10, ReLU) or "cnn" (two 3x3 conv blocks of 32
and 64 channels with batch norm, ReLU and 2x2 max pooling, a 128-unit head).
Both train with Adam (lr 1e-3) on shuffled batches and evaluate on the
validation set after each epoch, as the hpo trainers do.
"""

import gzip
import json
import struct
import sys
import time

import torch
from torch import nn


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    _, _, ndim = struct.unpack(">HBB", data[:4])
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    t = torch.frombuffer(bytearray(data[4 + 4 * ndim :]), dtype=torch.uint8)
    return t.reshape(dims)


def load(data_dir, train_n):
    x = read_idx(f"{data_dir}/train-images-idx3-ubyte.gz")[:train_n].float() / 255.0
    y = read_idx(f"{data_dir}/train-labels-idx1-ubyte.gz")[:train_n].long()
    vx = read_idx(f"{data_dir}/t10k-images-idx3-ubyte.gz").float() / 255.0
    vy = read_idx(f"{data_dir}/t10k-labels-idx1-ubyte.gz").long()
    mean, std = x.mean(), x.std()
    return (x - mean) / std, y, (vx - mean) / std, vy


def model(kind):
    if kind == "mlp":
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 256),
            nn.ReLU(),
            nn.Linear(256, 256),
            nn.ReLU(),
            nn.Linear(256, 10),
        )
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def main():
    data_dir, kind, epochs, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    train_n = int(sys.argv[5]) if len(sys.argv) > 5 else 60000
    torch.manual_seed(1)
    x, y, vx, vy = load(data_dir, train_n)
    if kind == "cnn":
        x, vx = x.reshape(-1, 1, 28, 28), vx.reshape(-1, 1, 28, 28)
    net = model(kind)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    rates = []
    acc = 0.0
    for _ in range(epochs):
        start = time.perf_counter()
        net.train()
        perm = torch.randperm(len(y))
        for i in range(0, len(y), batch):
            idx = perm[i : i + batch]
            opt.zero_grad()
            loss = loss_fn(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            correct = 0
            for i in range(0, len(vy), 2048):
                correct += (net(vx[i : i + 2048]).argmax(-1) == vy[i : i + 2048]).sum().item()
            acc = correct / len(vy)
        rates.append(len(y) / (time.perf_counter() - start))
    print(json.dumps({"model": kind, "samples_per_sec": rates, "val_accuracy": acc,
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
