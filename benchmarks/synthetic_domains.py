"""The two synthetic styles (dashcam, generated): render cost, domain separability, label learnability.

1. Render cost: ``scene_jpeg`` per image for each style, interleaved rounds, median; prints the ratio.
2. Domain separability: logistic regression on colour histograms + high-frequency energy, telling the
   styles apart (5-fold cross-validated accuracy; near 1.0 expected).
3. Label learnability, cheap: the same features + logistic regression, roadwork vs none within each style.
4. Label learnability, the demo's model: the demo's tiny ViT (random init, 64 px) trained with the
   validator augmentation (as in the demo) on (a) both styles mixed and (b) dashcam only; val MCC at
   0.5 and AUROC per style. (b) on generated shows the domain gap that per-domain scores should expose.

    python benchmarks/synthetic_domains.py [--per-class 500] [--epochs 10] [--train-fraction 0.8]
                                           [--models both,dashcam] [--timing-images 200]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import matthews_corrcoef, roc_auc_score
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from streetvision.data.challenge import ChallengeTransform
from streetvision.data.synthetic import STYLES, scene_jpeg
from streetvision.data.transforms import eval_transform
from streetvision.models.backbone import build_backbone
from streetvision.models.classifier import RoadworkClassifier

DEMO_MODEL = {"backbone": "vit_tiny_patch16_224", "img_size": 64, "init": "random",
              "backbone_kwargs": {"patch_size": 8, "embed_dim": 64, "depth": 3, "num_heads": 2,
                                  "class_token": False, "global_pool": "max"}}
MEAN = STD = (0.5, 0.5, 0.5)


def time_rendering(images: int, size: int, rounds: int = 5) -> dict[str, float]:
    """Median milliseconds per JPEG per style over interleaved rounds (both styles see the same load)."""
    per_style = {style: [] for style in STYLES}
    for r in range(rounds):
        for style in STYLES:
            start = time.perf_counter()
            for i in range(images):
                scene_jpeg(r * images + i, i % 2, size, style)
            per_style[style].append((time.perf_counter() - start) / images * 1e3)
    return {style: statistics.median(times) for style, times in per_style.items()}


def make_images(style: str, per_class: int, size: int) -> tuple[list[Image.Image], np.ndarray]:
    """Decoded JPEGs (what the pipeline reads), balanced labels; seeds disjoint from the timing run."""
    labels = np.repeat([0, 1], per_class)
    images = [Image.open(io.BytesIO(scene_jpeg(10_000_000 + i, int(label), size, style))).convert("RGB")
              for i, label in enumerate(labels)]
    return images, labels


def simple_features(image: Image.Image) -> np.ndarray:
    """Per-channel 8-bin RGB and HSV histograms plus the mean absolute Laplacian (high-frequency energy)."""
    rgb = np.asarray(image, dtype=np.float32)
    hsv = np.asarray(image.convert("HSV"), dtype=np.float32)
    hists = [np.histogram(a[..., c], bins=8, range=(0, 256))[0] / a[..., c].size for a in (rgb, hsv) for c in range(3)]
    grey = rgb.mean(axis=2)
    laplacian = np.abs(4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:])
    return np.concatenate([*hists, [laplacian.mean() / 255]])


def logistic(features: np.ndarray):
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))


def train_vit(images: list[Image.Image], labels: np.ndarray, epochs: int,
              seed: int = 0) -> RoadworkClassifier:
    """The demo's recipe in a bare loop: AdamW, lr 2e-3, wd 0.05, cosine with 5% warmup, batch 64."""
    torch.manual_seed(seed)
    model = RoadworkClassifier(build_backbone(DEMO_MODEL))
    preprocess, challenge = eval_transform(DEMO_MODEL["img_size"], MEAN, STD), ChallengeTransform(seed=seed)

    def augment(image):  # what validators send, then the model's preprocessing
        return preprocess(challenge(image).convert("RGB"))

    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    steps = epochs * int(np.ceil(len(images) / 64))
    warmup = max(1, int(0.05 * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + np.cos(np.pi * (s - warmup) / (steps - warmup))))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images)).tolist()
        for start in range(0, len(order), 64):
            batch = order[start:start + 64]
            x = torch.stack([augment(images[i]) for i in batch])
            y = torch.tensor(labels[batch], dtype=torch.float32)
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


@torch.no_grad()
def vit_scores(model: RoadworkClassifier, images: list[Image.Image]) -> np.ndarray:
    transform = eval_transform(DEMO_MODEL["img_size"], MEAN, STD)
    x = torch.stack([transform(image) for image in images])
    return torch.sigmoid(torch.cat([model(chunk) for chunk in x.split(256)])).numpy()


def report_vit(name: str, model, val: dict[str, tuple[list, np.ndarray]]) -> None:
    for style, (images, labels) in val.items():
        scores = vit_scores(model, images)
        mcc = matthews_corrcoef(labels, scores >= 0.5)
        best = max(matthews_corrcoef(labels,
                                     scores >= t) for t in np.unique(scores))  # optimistic: picked on val
        print(f"  ViT trained on {name:<8} → val {style:<9}: MCC@0.5 {mcc:.3f}  best-threshold MCC "
              f"{best:.3f}  AUROC {roc_auc_score(labels, scores):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=500, help="images per class per style")
    parser.add_argument("--size", type=int, default=96,
                        help="rendered side in pixels (the demo's image_size)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--timing-images", type=int, default=200)
    parser.add_argument("--train-fraction", type=float, default=0.8,
                        help="the rest is val (the demo trains on 0.6)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default="both,dashcam",
                        help="which ViTs to train: both, dashcam (comma-separated)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cost = time_rendering(args.timing_images, args.size)
    print(f"1. render cost per {args.size}px JPEG (median of 5 interleaved rounds × {args.timing_images}):")
    print(f"   dashcam {cost['dashcam']:.2f} ms, generated {cost['generated']:.2f} ms, "
          f"ratio {cost['generated'] / cost['dashcam']:.2f}×")

    start = time.perf_counter()
    data = {style: make_images(style, args.per_class, args.size) for style in STYLES}
    print(f"   ({2 * len(STYLES) * args.per_class} images for the experiments rendered in "
          f"{time.perf_counter() - start:.1f} s)")
    features = {style: np.stack([simple_features(im) for im in images]) for style, (images,
                                                                                    _) in data.items()}

    both = np.concatenate([features[s] for s in STYLES])
    domain = np.repeat(np.arange(len(STYLES)), [len(features[s]) for s in STYLES])
    accuracy = cross_val_score(logistic(both), both, domain, cv=5, scoring="accuracy")
    print(f"2. domain separability (colour histograms + HF energy, logistic regression, 5-fold): "
          f"accuracy {accuracy.mean():.3f} ± {accuracy.std():.3f}")

    print("3. label learnability, same features + logistic regression (5-fold MCC):")
    for style in STYLES:
        mcc = cross_val_score(logistic(features[style]), features[style], data[style][1], cv=5,
                              scoring="matthews_corrcoef")
        print(f"   {style:<9}: MCC {mcc.mean():.3f} ± {mcc.std():.3f}")

    split = {}
    for style, (images, labels) in data.items():
        train_idx, val_idx = train_test_split(np.arange(len(labels)), train_size=args.train_fraction,
                                              stratify=labels, random_state=0)
        split[style] = ([images[i] for i in train_idx], labels[train_idx], [images[i] for i in val_idx],
                        labels[val_idx])
    val = {style: (s[2], s[3]) for style, s in split.items()}
    print(f"4. demo ViT (random init, 64 px, validator augmentation, {args.epochs} epochs; "
          f"{len(split['dashcam'][1])} train / {len(split['dashcam'][3])} val images per style):")
    for name in args.models.split(","):
        styles = STYLES if name == "both" else (name,)
        start = time.perf_counter()
        model = train_vit([im for s in styles for im in split[s][0]],
                          np.concatenate([split[s][1] for s in styles]), args.epochs)
        print(f"  ({name}: trained in {time.perf_counter() - start:.0f} s)")
        report_vit(name, model, val)


if __name__ == "__main__":
    main()
