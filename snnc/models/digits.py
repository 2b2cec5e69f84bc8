"""The built-in demo network: a small MLP on scikit-learn's handwritten digits.

The data (1,797 grey 8x8 images of the digits 0-9, pixel values 0..16) ships with scikit-learn,
so nothing is downloaded. :func:`digits_split` makes a fixed stratified 70/30 train/test split and
scales pixels to [0, 1]; :func:`train_digits_mlp` trains a 64-64-10 ReLU MLP deterministically on
the CPU in about a second. Training runs on one thread (:func:`one_thread`): the result then does
not depend on the machine's core count, and a busy machine does not slow it down by oversubscription.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["DigitsMLP", "digits_split", "train_digits_mlp", "accuracy", "export_model",
           "save_split", "one_thread"]


class DigitsMLP(nn.Module):
    """``Linear(64, hidden) -> ReLU -> Linear(hidden, 10)``; input (B, 64) or (B, 8, 8)."""

    def __init__(self, hidden: int = 64):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64, hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(self.flatten(x))))


def digits_split(test_size: float = 0.3, seed: int = 0):
    """The fixed train/test split: ``(x_train, y_train, x_test, y_test)``.

    ``x`` is float32 of shape (N, 64) in [0, 1] (pixels / 16); ``y`` int64 labels 0..9.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, random_state=seed,
                                              stratify=y)
    return x_tr, y_tr, x_te, y_te


@contextmanager
def one_thread():
    """Run torch on one intra-op thread inside the block (the previous count is restored)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_digits_mlp(seed: int = 0, *, hidden: int = 64, epochs: int = 60,
                     batch_size: int = 64, lr: float = 3e-3) -> DigitsMLP:
    """Train :class:`DigitsMLP` on the training split (deterministic for a given ``seed``)."""
    with one_thread():
        return _train(seed, hidden, epochs, batch_size, lr)


def _train(seed, hidden, epochs, batch_size, lr) -> DigitsMLP:
    x_tr, y_tr, _, _ = digits_split()
    return fit(lambda: DigitsMLP(hidden), x_tr, y_tr, seed=seed, epochs=epochs,
               batch_size=batch_size, lr=lr)


def fit(make_model, x_tr, y_tr, *, seed: int, epochs: int, batch_size: int, lr: float,
        cosine: bool = False) -> nn.Module:
    """Train ``make_model()`` with Adam and cross-entropy, deterministically for ``seed``
    (the model is built after seeding, so its initial weights follow the seed too)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs) if cosine else None
    x, y = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
        if sched is not None:
            sched.step()
    return model.eval()


def accuracy(model: nn.Module, x, y) -> float:
    """Float accuracy of ``model`` on ``(x, y)``."""
    with torch.no_grad():
        pred = model(torch.as_tensor(np.asarray(x), dtype=torch.float32)).argmax(dim=1).numpy()
    return float(np.mean(pred == np.asarray(y)))


def export_model(model: nn.Module, path, sample_shape=(64,)) -> Path:
    """Save ``model`` as a ``.pt2`` ExportedProgram for inputs ``(B, *sample_shape)``, with a
    dynamic batch axis."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = (torch.zeros(2, *sample_shape),)
    batch = torch.export.Dim("batch", min=1)
    ep = torch.export.export(model.eval(), example, dynamic_shapes=({0: batch},))
    torch.export.save(ep, path)
    return path


def save_split(out_dir, split=None) -> tuple[Path, Path]:
    """Write ``calib.npz`` (the training split) and ``test.npz`` of ``split()`` (default: the
    MLP's :func:`digits_split`) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x_tr, y_tr, x_te, y_te = (split or digits_split)()
    np.savez(out / "calib.npz", x=x_tr, y=y_tr)
    np.savez(out / "test.npz", x=x_te, y=y_te)
    return out / "calib.npz", out / "test.npz"
