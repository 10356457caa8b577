"""The servable bundle: export (phase 6), verified loading, prediction.

    from streetvision.bundle import load_bundle
    detector = load_bundle("results/demo/phase6_bundle/bundle")
    p = detector(pil_image)          # float in [0, 1]; round(p) is the policy's decision

The names resolve on first use, so that light modules (``bundle.files``, ``bundle.policy``) import without
torch.
"""

__all__ = ["BundleError", "Detector", "load_bundle"]


def __getattr__(name: str):
    if name in __all__:
        from streetvision.bundle import load

        return getattr(load, name)
    raise AttributeError(f"module 'streetvision.bundle' has no attribute {name!r}")
