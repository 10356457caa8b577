"""One ExPLoRA training step (forward + backward), the way phase 4 runs it vs the way it used to.

- now: the teacher and the student over both global crops in one pass each, the student over all local
  crops in one pass, the locals at their own size (``explora.local_crop_size: null``: DINO's 96/224 in
  whole patches, 98 px for a patch-14 ViT);
- before: one pass per crop, the locals at ``model.img_size`` (the old default).

FLOPs are counted (``torch.utils.flop_counter``) and CPU time measured in the same run, interleaved, median
of ``--reps``; random-init DINOv2 ViT-S/14 at 224 px, batch ``--batch``, 2 + ``--locals`` crops.

    python benchmarks/explora_step.py [--batch 4] [--locals 6] [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def build(local_size: int):
    from streetvision.config import load_schema, resolve_experiments, section_settings
    from streetvision.models.backbone import any_size_copy, build_backbone
    from streetvision.train.explora import DinoSettings, ExploraModule, LoraSettings, add_lora

    cfg = resolve_experiments({"experiments": {"x": {}}, "data": {"source": "synthetic"},
                               "model": {"backbone": "vit_small_patch14_dinov2", "img_size": 224,
                                         "init": "random"}},
                              load_schema(REPO / "config" / "schema.yaml"))["x"]
    backbone = build_backbone(cfg["model"])
    if local_size != 224:
        backbone = any_size_copy(backbone, cfg["model"])
    settings = cfg["explora"]
    return ExploraModule(add_lora(backbone, section_settings(LoraSettings, settings)),
                         section_settings(DinoSettings, settings)).train()


def per_view_step(module, crops):
    """The old step: one backbone pass per crop."""
    teacher = [module.teacher_head(module.teacher(c)) for c in crops[:2]]
    student = [module.student_head(module.student(c)) for c in crops]
    return module.loss([s.float() for s in student], [t.float().detach() for t in teacher])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--locals", type=int, default=6)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from streetvision.train.explora import local_crop_side

    torch.manual_seed(0)
    local = local_crop_side(None, 224, 14)
    ways = {"now": (build(local), local, lambda m, c: m.training_step(c, 0)),
            "before": (build(224), 224, per_view_step)}
    crops = {name: [torch.randn(args.batch, 3, 224, 224) for _ in range(2)]
             + [torch.randn(args.batch, 3, size, size) for _ in range(args.locals)]
             for name, (_, size, _) in ways.items()}
    flops, seconds = {}, {name: [] for name in ways}
    with warnings.catch_warnings():  # self.log outside a Trainer: harmless here
        warnings.simplefilter("ignore")
        for name, (module, _, step) in ways.items():
            counter = FlopCounterMode(display=False)
            with counter:
                step(module, crops[name]).backward()
            flops[name] = counter.get_total_flops() / args.batch
        for _ in range(args.reps):
            for name, (module, _, step) in ways.items():
                started = time.perf_counter()
                step(module, crops[name]).backward()
                seconds[name].append(time.perf_counter() - started)
    print(f"ExPLoRA step, DINOv2 ViT-S/14 random init, batch {args.batch}, 2 global crops at 224 + {args.locals} "
          f"local crops, {torch.get_num_threads()} CPU threads")
    for name, (_, size, _) in ways.items():
        median = statistics.median(seconds[name])
        print(f"  {name:6s} locals at {size:3d} px: {flops[name] / 1e9:6.1f} GFLOP per image, "
              f"{median:6.2f} s per step")
    print(f"  now / before: {flops['now'] / flops['before']:.2f}x the FLOPs, "
          f"{statistics.median(seconds['now']) / statistics.median(seconds['before']):.2f}x the time")


if __name__ == "__main__":
    main()
