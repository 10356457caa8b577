"""The servable bundle: export (phase 6), verified loading, prediction.

    from streetvision.bundle import load_bundle
    detector = load_bundle("results/demo/phase6_bundle/bundle")
    p = detector(pil_image)          # float in [0, 1]; round(p) is the policy's decision
"""

from streetvision.bundle.load import BundleError, Detector, load_bundle

__all__ = ["BundleError", "Detector", "load_bundle"]
