"""The built-in demo CNN: a small residual convolutional network on scikit-learn's digits.

Same data and split as :mod:`snnc.models.digits` (the 8x8 images as (1, 8, 8), pixels in
[0, 1]). :class:`DigitsCNN` has every layer kind snnc converts::

    conv1 3x3 (1->8) - BN - ReLU - MaxPool 2          8x8 -> 4x4
    block: conv 3x3 (8->8) - BN - ReLU - conv 3x3 (8->8) - BN, + x, ReLU
    conv3 3x3 (8->16) - BN - ReLU - AvgPool 2          4x4 -> 2x2
    flatten - Linear(64 -> 10)

:func:`train_digits_cnn` trains it deterministically on the CPU in a few seconds (on one
thread, so that the result does not depend on the machine's core count).

The demo's defaults, T = 2 and S = 15, were measured (``snnc demo --model cnn`` prints the
table over bits and T): at T = 2 the 8-bit SNN is within 1 point of the float CNN and the 4-bit
SNN within 2, for training seeds 0-3; T = 1 loses up to 3 points at 4 bits.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .digits import digits_split, export_model, fit, one_thread, save_split

__all__ = ["DigitsCNN", "ResidualBlock", "train_digits_cnn", "cnn_split", "export_cnn",
           "save_cnn_split", "CNN_TIMESTEPS", "CNN_MAX_STRENGTH"]

#: The CNN demo's timesteps and maximum spike strength (see the module docstring).
CNN_TIMESTEPS = 2
CNN_MAX_STRENGTH = 15


class ResidualBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + x)``, 3x3 convolutions, same channels."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.relu(out)


class DigitsCNN(nn.Module):
    """The demo CNN (see the module docstring); input (B, 1, 8, 8) or (B, 64)."""

    def __init__(self, channels: int = 8, wide: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.block = ResidualBlock(channels)
        self.conv3 = nn.Conv2d(channels, wide, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(wide)
        self.pool2 = nn.AvgPool2d(2)
        self.flatten = nn.Flatten()
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(wide * 4, 10)

    def forward(self, x):
        x = x.reshape(x.shape[0], 1, 8, 8)
        x = self.pool1(self.relu(self.bn1(self.conv1(x))))
        x = self.block(x)
        x = self.pool2(self.relu(self.bn3(self.conv3(x))))
        return self.fc(self.drop(self.flatten(x)))


def cnn_split(test_size: float = 0.3, seed: int = 0):
    """:func:`~snnc.models.digits.digits_split` with images shaped (N, 1, 8, 8)."""
    x_tr, y_tr, x_te, y_te = digits_split(test_size, seed)
    return x_tr.reshape(-1, 1, 8, 8), y_tr, x_te.reshape(-1, 1, 8, 8), y_te


def train_digits_cnn(seed: int = 0, *, epochs: int = 40, batch_size: int = 32,
                     lr: float = 3e-3) -> DigitsCNN:
    """Train :class:`DigitsCNN` on the training split (deterministic for a given ``seed``)."""
    with one_thread():
        return _train(seed, epochs, batch_size, lr)


def _train(seed, epochs, batch_size, lr) -> DigitsCNN:
    x_tr, y_tr, _, _ = cnn_split()
    return fit(DigitsCNN, x_tr, y_tr, seed=seed, epochs=epochs, batch_size=batch_size, lr=lr,
               cosine=True)


def export_cnn(model: nn.Module, path) -> Path:
    """Save ``model`` as a ``.pt2`` ExportedProgram for (B, 1, 8, 8) inputs, dynamic batch."""
    return export_model(model, path, sample_shape=(1, 8, 8))


def save_cnn_split(out_dir) -> tuple[Path, Path]:
    """Write ``calib.npz`` (the training split) and ``test.npz`` with (N, 1, 8, 8) images."""
    return save_split(out_dir, split=cnn_split)
