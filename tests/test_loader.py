"""The loaders around the training views: worker count from the job's CPUs, prefetch depth, pinned memory."""

import pandas as pd

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
