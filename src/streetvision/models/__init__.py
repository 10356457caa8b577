"""Models: a backbone factory over any timm name, and the classifier built on it."""
