"""The files of a servable bundle, named once: each file's role in ``bundle.json`` and its name.

Phase 6 writes them (``bundle.export``), ``load_bundle`` verifies and reads them (``bundle.load``), the report
reads the policy (``layout.bundle_policy_of``). Light on purpose: no torch.
"""

INDEX = "bundle.json"  # lists every other file: role, relative path, SHA-256, bytes
FORMAT = "streetvision-bundle"

# role -> file name
WEIGHTS, MODEL_CONFIG, POLICY = "model.safetensors", "model_config.json", "policy.json"
CARD, README = "model_card.json", "README.md"
GATE_WEIGHTS, GATE_CONFIG = "gate.safetensors", "gate_config.json"
MEMBERS = {"weights": WEIGHTS, "model_config": MODEL_CONFIG, "policy": POLICY, "model_card": CARD,
           "readme": README, "gate_weights": GATE_WEIGHTS, "gate_config": GATE_CONFIG}
REQUIRED_ROLES = ("weights", "model_config", "policy")  # each exactly once; every other role at most once
