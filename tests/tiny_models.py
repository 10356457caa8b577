"""Tiny random-init models for the synthesize step, built with the libraries' own classes and saved with
``save_pretrained``, so that the step's real ``from_pretrained(folder)`` path runs offline: an SDXL
pipeline (UNet, VAE, two CLIP text encoders with a locally built tokenizer), a BLIP-2 captioner with its
processor, and a causal LM with a chat template. A few MB each; seconds to build."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

WORDS = ("road street car cone barrier sign crew lane closure construction traffic normal photorealistic "
         "dashcam footage of a the with and view scene orange truck worker asphalt city highway").split()
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def _byte_level_tokenizer(vocab_size: int = 300):
    """A byte-level BPE tokenizer trained on a few street words (the OPT and LM side)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([" ".join(WORDS)] * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")


def _clip_tokenizer(folder: Path):
    """A CLIP tokenizer over single characters (vocab.json + merges.txt written here): 77 tokens is ~75
    characters, so the prompt cut is exercised by ordinary prompts."""
    from transformers import CLIPTokenizer

    # Byte-level BPE's printable stand-ins for the 256 byte values (printable ones map to themselves).
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in printable]
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(shifted))]
    vocab = {token: i for i, token in enumerate(chars + [c + "</w>" for c in chars] +
                                                 ["<|startoftext|>", "<|endoftext|>"])}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def build_tiny_sdxl(folder: Path) -> Path:
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=80,
        cross_attention_dim=16, norm_num_groups=4)
    vae = AutoencoderKL(block_out_channels=(8, 8), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=4,
                        sample_size=16)
    text = CLIPTextConfig(bos_token_id=512, eos_token_id=513, hidden_size=8, intermediate_size=16, num_attention_heads=2,
                          num_hidden_layers=2, vocab_size=514, projection_dim=8, max_position_embeddings=77,
                          hidden_act="gelu")
    text_2 = CLIPTextConfig(**{**text.to_dict(), "hidden_size": 8, "projection_dim": 32})
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="leading", steps_offset=1)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = _clip_tokenizer(Path(scratch))
    pipeline = StableDiffusionXLPipeline(vae=vae, text_encoder=CLIPTextModel(text),
                                         text_encoder_2=CLIPTextModelWithProjection(text_2), tokenizer=tokenizer,
                                         tokenizer_2=tokenizer, unet=unet, scheduler=scheduler)
    pipeline.save_pretrained(folder)
    return folder


def build_tiny_blip2(folder: Path) -> Path:
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        Blip2QFormerConfig,
        Blip2VisionConfig,
        BlipImageProcessor,
        OPTConfig,
    )

    torch.manual_seed(0)
    tokenizer = _byte_level_tokenizer()
    vision = Blip2VisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                               image_size=32, patch_size=8)
    qformer = Blip2QFormerConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, encoder_hidden_size=16, vocab_size=len(tokenizer))
    text = OPTConfig(hidden_size=16, ffn_dim=32, num_hidden_layers=1, num_attention_heads=2,
                     vocab_size=len(tokenizer) + 1, word_embed_proj_dim=16, max_position_embeddings=128,
                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                     pad_token_id=tokenizer.pad_token_id)
    config = Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(),
                         text_config=text.to_dict(), num_query_tokens=4, image_token_index=len(tokenizer))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    processor = Blip2Processor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer,
                               num_query_tokens=4)
    Blip2ForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_tiny_chat_lm(folder: Path) -> Path:
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = _byte_level_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(do_sample=True, temperature=0.6, top_p=0.9,
                                               bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_models(root: Path) -> dict[str, str]:
    """The synthesize config keys pointing at freshly built tiny models under ``root``."""
    return {"captioner": str(build_tiny_blip2(root / "blip2")),
            "rewriter": str(build_tiny_chat_lm(root / "chat_lm")),
            "sdxl": str(build_tiny_sdxl(root / "sdxl"))}
