"""The synthesize step's library: validator-like SDXL images made from the ingested real images.

``draws`` decides what each image is (label, parent, task, seed), ``models`` finds and loads the models
(local folder or Hugging Face cache, never the network), ``prompts`` captions and rewrites, ``journal`` and
``shard`` make one shard's work resumable image by image. ``phases/synthesize.py`` runs a shard and gathers.
"""
