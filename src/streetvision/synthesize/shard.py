"""One shard's work in three stages, each resumable image by image through its journal (``work/``):
caption every parent, rewrite every caption, generate every image. The captioner and the LLM are out of
memory before SDXL loads (so that one 24 GB GPU should be enough), and a stage with nothing left to do
loads nothing."""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from streetvision.io.atomic import atomic_write_bytes
from streetvision.io.hashing import sha256_file
from streetvision.progress import ItemProgress
from streetvision.synthesize import models as model_io
from streetvision.synthesize.draws import ImageDraw
from streetvision.synthesize.journal import Journal
from streetvision.synthesize.prompts import (
    LABEL_KEYS,
    caption_image,
    fit_to_text_encoders,
    rewrite_caption,
    template_prompt,
)

log = logging.getLogger(__name__)

EMPTY_REWRITE = "template (empty rewrite)"  # the record's rewrite source when the LLM wrote nothing


@dataclass
class ShardRun:
    draws: list[ImageDraw]
    parent_paths: dict[str, str]  # parent sha256 -> the image validators sample (the cache copy)
    settings: dict  # the synthesize config section
    folders: dict[str, Path]  # model folder by config key (models.check_models)
    work_dir: Path
    image_dir: Path  # images/<sha[:2]>/<sha>.png, relative paths recorded from its parent
    device: str
    memory_after_stage: dict[str, int | None] | None = None

    def journal(self, stage: str) -> Journal:
        return Journal(self.work_dir / f"{stage}.jsonl")


def _pending(run: ShardRun, stage: str) -> tuple[Journal, dict[int, dict], list[ImageDraw]]:
    journal = run.journal(stage)
    done = journal.read()
    return journal, done, [draw for draw in run.draws if draw.number not in done]


def _stage(run: ShardRun, name: str, todo: list[ImageDraw],
           work: Callable[[list[ImageDraw], ItemProgress], None]) -> None:
    """Run ``work`` (which loads its models, and advances the stage's progress line once per image) and free
    the models before the next stage."""
    if not todo:
        return
    started = time.monotonic()
    progress = ItemProgress(f"synthesize {name}", len(run.draws), run.settings["progress_interval_s"],
                            done_before=len(run.draws) - len(todo))
    work(todo, progress)
    run.memory_after_stage = (run.memory_after_stage or {}) | {name: model_io.release_memory()}
    log.info("%s: %d done in %.1f s", name, len(todo), time.monotonic() - started)


def caption_stage(run: ShardRun) -> dict[int, dict]:
    journal, done, todo = _pending(run, "captions")

    def work(todo, progress):
        processor, model = model_io.load_captioner(run.folders["synthesize.captioner"], run.device)
        for draw in todo:
            with Image.open(run.parent_paths[draw.parent_sha256]) as image:
                caption = caption_image(processor, model, image.convert("RGB"),
                                        max_new_tokens=run.settings["caption_tokens"],
                                        empty_caption=run.settings["empty_caption"])
            journal.append({"number": draw.number, "caption": caption})
            progress.advance()

    _stage(run, "captions", todo, work)
    return journal.read()


def rewrite_stage(run: ShardRun, captions: dict[int, dict]) -> dict[int, dict]:
    """{number: {"prompt", "rewrite"}}: the LLM's text, or a label template when there is no LLM (rewriter:
    null) or it wrote nothing."""
    journal, done, todo = _pending(run, "prompts")
    settings = run.settings

    def templated(draw: ImageDraw, source: str) -> dict:
        template = settings["templates"][LABEL_KEYS[draw.label]]
        return {"number": draw.number, "prompt": template_prompt(template, captions[draw.number]["caption"]),
                "rewrite": source}

    def work(todo, progress):
        if settings["rewriter"] is None:
            for draw in todo:
                journal.append(templated(draw, "template"))
                progress.advance()
            return
        tokenizer, model = model_io.load_rewriter(run.folders["synthesize.rewriter"], run.device)
        for draw in todo:
            text = rewrite_caption(tokenizer, model, captions[draw.number]["caption"],
                                   instruction=settings["instructions"][LABEL_KEYS[draw.label]],
                                   max_new_tokens=settings["rewrite_tokens"], seed=draw.seed)
            entry = ({"number": draw.number, "prompt": text, "rewrite": settings["rewriter"]} if text
                     else templated(draw, EMPTY_REWRITE))
            journal.append(entry)
            progress.advance()

    _stage(run, "prompts", todo, work)
    return journal.read()


def _finished_image_ok(run: ShardRun, entry: dict) -> bool:
    path = run.image_dir.parent / entry["path"]
    return path.is_file() and sha256_file(path) == entry["sha256"]


def i2i_input(path: str, max_side: int) -> Image.Image:
    """The parent as validators pass it to image-to-image: resized to exactly max_side x max_side (LANCZOS,
    aspect not kept) when either side exceeds max_side, else as it is."""
    with Image.open(path) as image:
        image = image.convert("RGB")
    if image.width > max_side or image.height > max_side:
        image = image.resize((max_side, max_side), Image.LANCZOS)
    return image


def generate_stage(run: ShardRun, prompts: dict[int, dict]) -> dict[int, dict]:
    """{number: record} of every generated image; an image whose file is gone or changed is made again."""
    journal, done, todo = _pending(run, "images")
    broken = [draw for draw in run.draws
              if draw.number in done and not _finished_image_ok(run, done[draw.number])]
    if broken:
        log.warning("%d finished image(s) are missing or changed on disk: generating them again", len(broken))
    settings = run.settings

    def work(todo, progress):
        import torch

        need = {draw.task for draw in todo}
        pipelines = model_io.load_generators(
            run.folders.get("synthesize.t2i.model") if "t2i" in need else None,
            run.folders.get("synthesize.i2i.model") if "i2i" in need else None, run.device)
        for done_now, draw in enumerate(todo, start=1):
            pipeline = pipelines[draw.task]
            prompt = fit_to_text_encoders(prompts[draw.number]["prompt"],
                                          [pipeline.tokenizer, pipeline.tokenizer_2])
            task_cfg = settings[draw.task]
            call = {"prompt": prompt, "negative_prompt": task_cfg["negative_prompt"],
                    "num_inference_steps": settings["steps"], "guidance_scale": settings["guidance"],
                    "generator": torch.Generator(run.device).manual_seed(draw.seed)}
            if draw.task == "t2i":
                call |= {"width": task_cfg["width"], "height": task_cfg["height"]}
            else:
                call |= {"image": i2i_input(run.parent_paths[draw.parent_sha256], task_cfg["max_side"]),
                         "strength": task_cfg["strength"]}
            started = time.monotonic()
            image = pipeline(**call).images[0]
            journal.append(_save_image(run, draw, image, prompt, prompts[draw.number]))
            log.info("image %d (%d/%d this run): %s %dx%d in %.1f s", draw.number, done_now, len(todo),
                     draw.task, image.width, image.height, time.monotonic() - started)
            progress.advance()

    _stage(run, "images", todo + broken, work)
    return journal.read()


def _save_image(run: ShardRun, draw: ImageDraw, image: Image.Image, prompt: str, prompt_entry: dict) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    relative = f"{run.image_dir.name}/{sha[:2]}/{sha}.png"
    atomic_write_bytes(run.image_dir.parent / relative, data)
    settings, task_cfg = run.settings, run.settings[draw.task]
    return {
        "number": draw.number, "sha256": sha, "path": relative, "bytes": len(data),
        "parent_sha256": draw.parent_sha256, "label": draw.label, "task": draw.task, "prompt": prompt,
        "rewrite": prompt_entry["rewrite"], "negative_prompt": task_cfg["negative_prompt"],
        "model": task_cfg["model"], "seed": draw.seed, "steps": settings["steps"],
        "guidance": settings["guidance"], "strength": task_cfg.get("strength"),
        "width": image.width, "height": image.height,
    }


def run_shard(run: ShardRun) -> tuple[list[dict], int]:
    """(records of the shard's images in number order, how many were generated by this call)."""
    _, _, todo_before = _pending(run, "images")
    captions = caption_stage(run)
    prompts = rewrite_stage(run, captions)
    images = generate_stage(run, prompts)
    records = []
    for draw in run.draws:
        record = dict(images[draw.number])
        record["caption"] = captions[draw.number]["caption"]
        records.append(record)
    return records, len(todo_before)
