import pytest
import torch
from safetensors.torch import save_file

from streetvision.models.backbone import (
    WeightsNotFoundError,
    apply_freezing,
    build_backbone,
    count_parameters,
    data_config,
)

TINY = {
    "backbone": "vit_tiny_patch16_224",
    "backbone_kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2},
    "img_size": 32,
    "init": "random",
    "pretrained_file": None,
}


def test_random_init_only_when_asked():
    model = build_backbone(TINY)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 32)
    spec = data_config(model, 32)
    assert spec["img_size"] == 32 and len(spec["mean"]) == 3


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_weights_from_a_local_file(tmp_path, fmt):
    source = build_backbone(TINY)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / f"w.{fmt}"
    save_file(state, path) if fmt == "safetensors" else torch.save(state, path)
    loaded = build_backbone({**TINY, "init": "file", "pretrained_file": str(path)})
    x = torch.randn(2, 3, 32, 32)
    source.eval(), loaded.eval()
    assert torch.equal(source(x), loaded(x))


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_objects_in_a_weights_file_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "payload": Evil()}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported global"):
        build_backbone({**TINY, "init": "file", "pretrained_file": str(path)})


def test_missing_pretrained_file_says_where_to_put_it(tmp_path):
    with pytest.raises(WeightsNotFoundError,
                       match=r"does not exist: put the vit_tiny_patch16_224 weights there"):
        build_backbone({**TINY, "init": "file", "pretrained_file": str(tmp_path / "nope.safetensors")})
    with pytest.raises(WeightsNotFoundError, match="model.pretrained_file' is required"):
        build_backbone({**TINY, "init": "file"})


def test_uncached_hub_weights_fail_without_touching_the_network(tmp_path, monkeypatch):
    import socket

    attempts = []

    def no_network(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsNotFoundError, match="not in the local Hugging Face cache"):
        build_backbone({**TINY, "init": "hf_cache"})
    assert attempts == []  # looked up offline: never tries (and so never hangs on) a download


def test_weights_from_the_local_hf_cache(tmp_path, monkeypatch):
    import timm

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    hub_id = timm.models.get_pretrained_cfg("vit_tiny_patch16_224").hf_hub_id
    snapshot = tmp_path / "hf" / "hub" / f"models--{hub_id.replace('/', '--')}" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    source = build_backbone(TINY)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, snapshot / "model.safetensors")
    loaded = build_backbone({**TINY, "init": "hf_cache"})
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(source.eval()(x), loaded.eval()(x))


def test_freezing_policies():
    model = build_backbone(TINY)
    total = count_parameters(model)["total"]
    apply_freezing(model, "frozen", 0)
    assert count_parameters(model)["trainable"] == 0
    apply_freezing(model, "last_n", 1)
    last_block = sum(p.numel() for p in model.blocks[-1].parameters())
    assert last_block < count_parameters(model)["trainable"] < total
    assert all(not p.requires_grad for p in model.blocks[0].parameters())
    apply_freezing(model, "full", 0)
    assert count_parameters(model)["trainable"] == total


@pytest.mark.slow
def test_dinov2_weights_saved_as_the_readme_says_load_at_224(tmp_path):
    """README: save timm's DINOv2 (native 518 px) state dict as safetensors; init: file loads it at 224 px."""
    import timm

    native = timm.create_model("vit_small_patch14_dinov2.lvd142m", pretrained=False)
    path = tmp_path / "dinov2.safetensors"
    save_file({k: v.contiguous() for k, v in native.state_dict().items()}, path)
    model = build_backbone({"backbone": "vit_small_patch14_dinov2.lvd142m", "backbone_kwargs": {},
                            "img_size": 224, "init": "file", "pretrained_file": str(path)})
    loaded = model.state_dict()
    assert loaded["pos_embed"].shape == (1, 1 + 16 * 16, 384)  # resampled from 37 x 37 patches
    assert torch.equal(loaded["blocks.11.mlp.fc2.weight"], native.state_dict()["blocks.11.mlp.fc2.weight"])
    assert torch.equal(loaded["blocks.0.ls1.gamma"], native.state_dict()["blocks.0.ls1.gamma"])  # not reset
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 384)


def test_random_dinov2_gets_unit_layer_scales_so_its_blocks_act():
    model = build_backbone({"backbone": "vit_small_patch14_dinov2.lvd142m", "backbone_kwargs": {},
                            "img_size": 224, "init": "random", "pretrained_file": None})
    assert all(torch.all(block.ls1.gamma == 1) for block in model.blocks)
