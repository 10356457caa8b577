"""Calibration: exact threshold sweep (phase 2); temperature scaling and SCRC arrive with phase 5."""
