"""Lightning training loop vs a bare PyTorch loop: same model, data, optimizer and number of steps.

Data are in-memory tensors (no decoding), so the ratio isolates the loop's own overhead. Imports
and model construction are excluded from both timings; each loop runs a short warm-up first.
Target: Lightning / bare <= 1.05. Also prints images/s for each, and model FLOP utilisation when
``--peak-tflops`` (the device's dense peak for the chosen precision) is given. Then what the tuning
switches cost per step against plain Lightning training, interleaved in the same run: ``train.ema_decay``
(Lightning's EMAWeightAveraging) and ``model.freeze: lora`` (PEFT adapters on every block's qkv, rank 8).

    python benchmarks/train_loop.py [--steps 300] [--batch-size 64]                    # demo ViT, CPU
    python benchmarks/train_loop.py --model dinov2_small --accelerator cuda \
        --precision bf16-mixed --batch-size 128 --peak-tflops 989                        # H100 SXM bf16
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from streetvision.models.backbone import build_backbone
from streetvision.models.classifier import RoadworkClassifier
from streetvision.train.classifier_module import BaselineModule, layer_decay_groups

MODELS = {}
MODELS["demo"] = {
    "backbone": "vit_tiny_patch16_224",
    "backbone_kwargs": {"patch_size": 8, "embed_dim": 64, "depth": 3, "num_heads": 2, "class_token": False,
                        "global_pool": "max"},
    "img_size": 64,
    "init": "random",
}
MODELS["dinov2_small"] = {"backbone": "vit_small_patch14_dinov2", "backbone_kwargs": {}, "img_size": 224,
                          "init": "random"}


class TensorTriples(Dataset):
    def __init__(self, n: int, size: int):
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, size, size, generator=generator)
        self.labels = (torch.rand(n, generator=generator) < 0.5).float()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], self.labels[i], i


def fresh_model(model_cfg: dict) -> RoadworkClassifier:
    torch.manual_seed(0)
    return RoadworkClassifier(build_backbone(model_cfg))


def bare_loop(model: RoadworkClassifier, loader: DataLoader, steps: int, device: str,
              precision: str) -> float:
    model.to(device)
    optimizer = torch.optim.AdamW(layer_decay_groups(model, 1e-3, 0.05, None))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    model.train()
    synchronize(device)
    start, done = time.perf_counter(), 0
    while done < steps:
        for images, labels, _ in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                logits = model(images)
            loss_fn(logits.float(), labels).backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
    synchronize(device)
    return time.perf_counter() - start


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def lightning_loop(model: RoadworkClassifier, loader: DataLoader, steps: int, device: str,
                   precision: str, callbacks=()) -> float:
    module = BaselineModule(model, lr=1e-3, weight_decay=0.05, warmup_fraction=0.0)
    trainer = L.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, precision=precision,
                        max_steps=steps, logger=False, enable_checkpointing=False, callbacks=list(callbacks),
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0)
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader)
    synchronize(device)
    return time.perf_counter() - start


def lora_model(model_cfg: dict) -> RoadworkClassifier:
    """The classifier as ``model.freeze: lora`` trains it (rank 8 on every block's qkv; the head in full)."""
    from streetvision.models.backbone import backbone_blocks, lora_wrapped

    torch.manual_seed(0)
    backbone = build_backbone(model_cfg)
    blocks = list(range(len(backbone_blocks(backbone))))
    return RoadworkClassifier(lora_wrapped(backbone, blocks, ["qkv"], rank=8, alpha=16))


def tuning_costs(model_cfg: dict, loader: DataLoader, steps: int, device: str, precision: str,
                 rounds: int) -> dict[str, float]:
    """Best-of-``rounds`` seconds of plain, EMA and LoRA Lightning training, interleaved."""
    from lightning.pytorch.callbacks import EMAWeightAveraging

    variants = {"plain": lambda: (fresh_model(model_cfg), ()),
                "EMA (decay 0.999)": lambda: (fresh_model(model_cfg), (EMAWeightAveraging(decay=0.999),)),
                "LoRA (rank 8, qkv)": lambda: (lora_model(model_cfg), ())}
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, make in variants.items():
            model, callbacks = make()
            times[name].append(lightning_loop(model, loader, steps, device, precision, callbacks))
    return {name: min(values) for name, values in times.items()}


def flops_per_step(model_cfg: dict, batch_size: int, device: str) -> int:
    """Forward + backward FLOPs of one training step, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    model = fresh_model(model_cfg).to(device)
    images = torch.randn(batch_size, 3, model_cfg["img_size"], model_cfg["img_size"], device=device)
    with FlopCounterMode(display=False) as counter:
        model(images).sum().backward()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="demo")
    parser.add_argument("--accelerator", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=["32-true", "bf16-mixed"], default="32-true")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="device peak for the precision, for MFU")
    args = parser.parse_args()
    model_cfg, device, precision = MODELS[args.model], args.accelerator, args.precision
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    loader = DataLoader(TensorTriples(max(4096, 4 * args.batch_size), model_cfg["img_size"]),
                        batch_size=args.batch_size, shuffle=True, drop_last=True)
    bare_loop(fresh_model(model_cfg), loader, 20, device, precision)  # warm-up: allocator, kernels
    lightning_loop(fresh_model(model_cfg), loader, 20, device, precision)
    bare, light = [], []
    for _ in range(args.rounds):  # interleaved so machine noise hits both alike
        bare.append(bare_loop(fresh_model(model_cfg), loader, args.steps, device, precision))
        light.append(lightning_loop(fresh_model(model_cfg), loader, args.steps, device, precision))
    images = args.steps * args.batch_size
    b, li = min(bare), min(light)
    print(f"{args.steps} steps x batch {args.batch_size}, {model_cfg['backbone']} at {model_cfg['img_size']} "
          f"px, {device} {precision}, {torch.get_num_threads()} threads, best of {args.rounds}")
    print(f"bare torch loop: {b:.2f} s ({images / b:,.0f} img/s)")
    print(f"Lightning loop:  {li:.2f} s ({images / li:,.0f} img/s)")
    print(f"ratio Lightning / bare: {li / b:.3f} (target <= 1.05: {'met' if li / b <= 1.05 else 'MISSED'})")
    if args.peak_tflops:
        achieved = flops_per_step(model_cfg, args.batch_size, device) * args.steps / li / 1e12
        print(f"model FLOP utilisation (Lightning): {achieved:.1f} TFLOP/s = "
              f"{100 * achieved / args.peak_tflops:.1f}% of {args.peak_tflops} TFLOP/s peak")
    costs = tuning_costs(model_cfg, loader, args.steps, device, precision, args.rounds)
    print("tuning switches, Lightning, same steps (best of rounds, interleaved):")
    for name, seconds in costs.items():
        print(f"  {name:20s} {seconds:6.2f} s ({images / seconds:,.0f} img/s, "
              f"{seconds / costs['plain']:.2f}x plain)")


if __name__ == "__main__":
    main()
