"""The loaders around the training views: worker count from the job's CPUs, prefetch depth, pinned memory."""

import pandas as pd
import pytest

from streetvision.train.datamodule import SplitDataModule, TrainingDraws
from streetvision.train.trainer import loader_workers


def test_workers_default_to_the_jobs_cpus_minus_the_training_process():
    assert loader_workers(3, threads=16, environ={}) == 3  # configured wins
    assert loader_workers(None, threads=4, environ={}) == 3
    assert loader_workers(None, threads=4, environ={"SLURM_CPUS_PER_GPU": "8"}) == 7  # the allocation
    assert loader_workers(None, threads=1, environ={}) == 0
    assert loader_workers(None, threads=None, environ={}) >= 0  # this process's CPU affinity


def test_training_loaders_prefetch_and_pin_on_cuda():
    index = pd.DataFrame({"id": ["a", "b", "c"], "sha256": ["a" * 64, "b" * 64, "c" * 64], "label": [0, 1, 0],
                          "split": ["train", "train", "val_select"], "path": ["x", "y", "z"], "width": [8] * 3,
                          "height": [8] * 3, "domain": ["real"] * 3})
    draws = TrainingDraws(batch_size=2, num_workers=2, prefetch_factor=6, level_probs=[0.25] * 4,
                          domain_weights=None, epoch_samples=None, seed=0)
    spec = {"img_size": 32, "mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bicubic"}
    for pin in (False, True):
        module = SplitDataModule(index, spec, draws, challenge_seed=0, pin_memory=pin)
        loader = module.train_dataloader()
        assert loader.num_workers == 2 and loader.prefetch_factor == 6 and loader.pin_memory is pin
        assert loader.persistent_workers and not module.eval_loader("val_select").persistent_workers


def test_training_batches_are_normalised_on_the_device_exactly_as_evaluation_preprocesses(tmp_path):
    """Training views leave the workers as uint8 pixels; the datamodule's after-transfer hook completes the
    evaluation preprocessing on them, to the bit."""
    import numpy as np
    import torch
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(paths[-1])
    index = pd.DataFrame({"id": list("abcd"), "sha256": [c * 64 for c in "abcd"], "label": [0, 1, 0, 1],
                          "split": ["train"] * 3 + ["val_select"], "path": [str(p) for p in paths],
                          "width": [64] * 4, "height": [48] * 4, "domain": ["real"] * 4})
    draws = TrainingDraws(batch_size=3, num_workers=0, prefetch_factor=2, level_probs=[0.25] * 4,
                          domain_weights=None, epoch_samples=None, seed=0)
    spec = {"img_size": 32, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "interpolation": "bicubic"}
    module = SplitDataModule(index, spec, draws, challenge_seed=0)
    images, labels, _ = next(iter(module.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (3, 3, 32, 32)
    normalised, same_labels, _ = module.on_after_batch_transfer([images, labels, None], 0)
    assert normalised.dtype == torch.float32 and torch.equal(same_labels, labels)
    picture = Image.open(paths[0]).convert("RGB")
    assert torch.equal(module.normalize(module.train_pixels(picture)[None])[0], module.preprocess(picture))
    evaluation = next(iter(module.eval_loader("val_select")))
    assert torch.equal(module.on_after_batch_transfer(evaluation, 0)[0], evaluation[0])  # already normalised


@pytest.mark.slow
def test_the_training_clock_measures_how_long_steps_wait_for_their_batch(tmp_path, monkeypatch):
    """On a fake clock: each image costs the loader 1 s, each step 0.25 s and each end of step (checkpoint
    saves, hooks: not loader time) 5 s; the sampled steps (every 10th) report the loader-bound share exactly,
    through the trainer the phases build."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, Dataset

    from streetvision.train import trainer as trainer_module

    clock = [0.0]
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: clock[0])

    class SlowImages(Dataset):
        def __len__(self):
            return 84  # 42 steps: the sampled ones (10th, 20th, ...) never the last, which fetches nothing

        def __getitem__(self, i):
            clock[0] += 1.0
            return torch.ones(4), torch.tensor(1.0)

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            clock[0] += 0.25
            images, labels = batch
            return torch.nn.functional.mse_loss(self.layer(images).squeeze(1), labels)

        def on_train_batch_end(self, outputs, batch, batch_idx):
            clock[0] += 5.0

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer, _ = trainer_module.build_trainer(tmp_path, accelerator="cpu", devices=1, max_epochs=1,
                                              precision="32-true")
    trainer.fit(Tiny(), train_dataloaders=DataLoader(SlowImages(), batch_size=2))  # 4 steps sampled
    clock_callback = next(c for c in trainer.callbacks if isinstance(c, trainer_module.TrainingClock))
    summary = clock_callback.summary(trainer)
    assert summary["loader_sampled_steps"] == 4
    assert summary["mean_batch_wait_s"] == 2.0 and summary["mean_step_s"] == 0.25
    assert summary["loader_wait_fraction"] == 2.0 / 2.25
