"""Captions and prompts as validators make them: a BLIP-2 caption (a full stop appended, a fixed caption when
empty), rewritten by label by an instruct LLM through its chat template, then cut to what SDXL's text
encoders read."""

from __future__ import annotations

LABEL_KEYS = {1: "roadwork", 0: "no_roadwork"}


def caption_image(processor, model, image, *, max_new_tokens: int, empty_caption: str) -> str:
    import torch  # here, not at import: the gather (phases/synthesize.py) is a light step

    inputs = processor(images=image, return_tensors="pt")
    inputs = {name: value.to(model.device, model.dtype if value.is_floating_point() else value.dtype)
              for name, value in inputs.items()}
    with torch.inference_mode():
        ids = model.generate(**inputs, max_new_tokens=max_new_tokens)
    caption = processor.batch_decode(ids, skip_special_tokens=True)[0].strip()
    if not caption:
        return empty_caption
    return caption if caption.endswith(".") else caption + "."


def rewrite_caption(tokenizer, model, caption: str, *, instruction: str, max_new_tokens: int,
                    seed: int) -> str:
    """The LLM's rewrite (its own generation config: sampling for instruct models, seeded here so that a
    rerun gives the same prompt); '' when it writes nothing."""
    import torch

    messages = [{"role": "system", "content": instruction}, {"role": "user", "content": caption}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True).to(model.device)
    torch.manual_seed(seed)
    with torch.inference_mode():
        ids = model.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def template_prompt(template: str, caption: str) -> str:
    return template.replace("{caption}", caption).strip()


def _length(tokenizer, text: str) -> int:
    return len(tokenizer(text, verbose=False)["input_ids"])  # quiet: measuring a long prompt is the point


def fit_to_text_encoders(prompt: str, tokenizers) -> str:
    """``prompt`` cut to the shorter tokenizer's limit (77 CLIP tokens for SDXL), so the record says what
    the model read. Decoding can change a tokenisation, so cut again until every tokenizer fits."""
    for _ in range(8):
        too_long = [t for t in tokenizers if _length(t, prompt) > t.model_max_length]
        if not too_long:
            return prompt
        limit = min(t.model_max_length for t in tokenizers)
        tokenizer = too_long[0]
        ids = tokenizer(prompt, truncation=True, max_length=limit)["input_ids"]
        prompt = tokenizer.decode(ids, skip_special_tokens=True).strip()
    words = prompt.split()
    while words and any(_length(t, " ".join(words)) > t.model_max_length for t in tokenizers):
        words.pop()
    return " ".join(words)
