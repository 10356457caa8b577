"""Training: data module, Lightning modules, trainer wiring, device assignment."""
