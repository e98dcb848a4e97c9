"""Training the digit classifier that counts and measures generated digits.

labkit ships the trained weights (labkit/assets/digit_classifier.pt), so
students never run this; `labkit train-classifier` reproduces them.

Generated digits are a little off MNIST's distribution (strokes a pixel off
centre, blurrier), so training shifts each batch by up to 2 pixels: a cheap
augmentation that makes the counts on GAN samples less sensitive to position.
"""

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import BatchSampler, load_mnist
from .runs.checkpoints import save_checkpoint
from .runs.progress import bar as progress_bar

ASSET = Path(__file__).parent / "assets" / "digit_classifier.pt"
CHECKPOINT_KIND = "digit-classifier"


class DigitClassifier(nn.Module):
    """A small CNN that reads 32x32 MNIST digits in [-1, 1]: labkit's judge of samples.

    Three conv blocks (32 -> 64 -> 128 channels, each halving the image) and a
    global average pool give a 128-d feature vector (`features`), which MNIST-FID,
    KID and precision/recall compare; a linear layer maps it to 10 digit logits.
    About 93k parameters (370 kB), trained once by `labkit train-classifier`.
    """

    feature_dim = 128

    def __init__(self):
        super().__init__()

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(True), nn.MaxPool2d(2)]

        self.body = nn.Sequential(*block(1, 32), *block(32, 64), *block(64, 128),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.feature_dim, 10))

    def features(self, images):
        return self.body(images)

    def forward(self, images):
        return self.head(self.features(images))


def random_shift(images, max_shift, rng):
    """Shift the whole batch by the same random (dy, dx), filling with background."""
    dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=rng))
    padded = F.pad(images, (max_shift,) * 4, value=-1.0)
    size = images.shape[-1]
    return padded[..., max_shift + dy: max_shift + dy + size, max_shift + dx: max_shift + dx + size]


@torch.no_grad()
def accuracy(model, images, labels, batch_size=1000):
    model.eval()
    correct = sum((model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum().item()
                  for i in range(0, len(images), batch_size))
    return correct / len(images)


def train_classifier(epochs=6, batch_size=128, learning_rate=2e-3, seed=0, device="cpu", out=ASSET,
                     progress=True):
    """Train DigitClassifier on MNIST train; save it to `out`; return (model, test accuracy)."""
    torch.manual_seed(seed)
    images, labels = load_mnist("train", device=device)
    test_images, test_labels = load_mnist("test", device=device)
    model = DigitClassifier().to(device)
    batches = BatchSampler(len(images), batch_size, seed, device)
    steps = epochs * batches.batches_per_epoch
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps)
    rng = torch.Generator().manual_seed(seed)
    started = time.time()
    model.train()
    for step in progress_bar(range(steps), desc="digit classifier", disable=not progress):
        index = batches.indices(step)
        loss = F.cross_entropy(model(random_shift(images[index], 2, rng)), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    test_accuracy = accuracy(model, test_images, test_labels)
    model.cpu().eval()
    save_checkpoint(out, CHECKPOINT_KIND, steps, {"epochs": epochs, "seed": seed, "batch_size": batch_size,
                                                  "learning_rate": learning_rate},
                    models={"classifier": model}, counters={"test_accuracy": test_accuracy})
    if progress:
        print(f"labkit: digit classifier, {epochs} epochs in {time.time() - started:.0f} s, "
              f"test accuracy {test_accuracy:.4f}; saved to {out}")
    return model, test_accuracy
