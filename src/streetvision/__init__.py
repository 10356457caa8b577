"""streetvision: train, calibrate and export roadwork classifiers for NATIX StreetVision."""

__version__ = "0.1.0"
