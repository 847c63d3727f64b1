"""Plain-PyTorch baselines for the time-to-accuracy marks, written as the tutorials write them.

    python benchmarks/plain_baseline.py mlp98 | mnist99 | cifar68 [--max-epochs N]

mlp98: the lecture's 512-512-10 MLP as its Keras source trained it (dropout 0.2, Adam lr 1e-3
at a constant rate, batch 128, pixels in [0, 1]) on the first 48,000 training images (Keras's
validation_split=0.2 holds out the last 12,000).
mnist99: the network and recipe of PyTorch's examples/mnist (conv 32, conv 64, max-pool,
dropout 0.25, dense 128, dropout 0.5; Adadelta lr 1.0 with the rate x 0.7 each epoch, batch 64).
cifar68: the lecture's CIFAR-10 CNN as its Keras source trained it (RMSprop lr 1e-3, rho 0.9,
batch 32, pixels in [0, 1]) on all 50,000 training images.

Float tensors in a TensorDataset, a DataLoader, torch.nn layers, torch.optim, fp32, NCHW. The
data is parsed from the dataset files each run (CONVKIT_TENSOR_CACHE=0), as a script reading
them would. After each epoch the test accuracy is measured and one JSON line printed with the
seconds since the process started; it stops at the first epoch that reaches the mark.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

MARKS = {"mlp98": ("mnist", 0.982), "mnist99": ("mnist", 0.99), "cifar68": ("cifar10", 0.68)}


def mlp_net() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Dropout(0.2), nn.Linear(512, 512),
        nn.ReLU(), nn.Dropout(0.2), nn.Linear(512, 10),
    )  # fmt: skip


def mnist_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Dropout(0.25), nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(128, 10),
    )  # fmt: skip


def cifar_net() -> nn.Module:
    def block(cin: int, cout: int) -> list[nn.Module]:  # Keras 'same' for a 2x2 kernel
        return [nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(cin, cout, 2), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(
        *block(3, 16), *block(16, 32), *block(32, 64), nn.Dropout(0.3), nn.Flatten(),
        nn.Linear(1024, 500), nn.ReLU(), nn.Dropout(0.4), nn.Linear(500, 10),
    )  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mark", choices=sorted(MARKS))
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    os.environ["CONVKIT_TENSOR_CACHE"] = "0"
    from convkit.data import load_dataset

    name, mark = MARKS[args.mark]
    data = load_dataset(name, args.data_dir, download=False)
    torch.manual_seed(0)
    train_split = data.train
    if args.mark == "mlp98":
        mean, std = 0.0, 1.0
        model = mlp_net()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        sched = None
        batch = 128
        keep = len(train_split) - len(train_split) // 5  # Keras: the last 20% held out
        train_split = type(train_split)(train_split.images[:keep], train_split.labels[:keep])
    elif name == "mnist":
        mean, std = 0.1307, 0.3081
        model = mnist_net()
        opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
        batch = 64
    else:
        mean, std = 0.0, 1.0
        model = cifar_net()
        opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
        sched = None
        batch = 32

    def tensors(split) -> TensorDataset:
        return TensorDataset((split.images.float() / 255.0 - mean) / std, split.labels)

    train = DataLoader(tensors(train_split), batch_size=batch, shuffle=True)
    test = DataLoader(tensors(data.test), batch_size=1000)
    loss_fn = nn.CrossEntropyLoss()
    train_seconds = 0.0
    for epoch in range(1, args.max_epochs + 1):
        t = time.perf_counter()
        model.train()
        for x, y in train:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
        if sched is not None:
            sched.step()
        train_seconds += time.perf_counter() - t
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test:
                correct += (model(x).argmax(1) == y).sum().item()
        accuracy = correct / len(data.test)
        line = dict(epoch=epoch, test_accuracy=accuracy, train_seconds=train_seconds)
        print(json.dumps({**line, "seconds": time.perf_counter() - STARTED}), flush=True)
        if accuracy >= mark:
            return 0
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
