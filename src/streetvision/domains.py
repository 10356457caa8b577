"""How validators mix domains (real / synthetic): the weights phase 1 draws with and the report scores with.

Kept apart from the training sampler so that light steps (the report) need neither torch nor Lightning.
"""

from __future__ import annotations

from streetvision.errors import StreetvisionError

VALIDATOR_MIX = {"real": 0.5, "synthetic": 0.5}
GENERATED_DOMAIN = "synthetic"  # images a generator made (the synthesize step's, the demo's generated style)


def domain_weights(domains, configured: dict | None) -> dict[str, float]:
    """The share of training draws per domain present, summing to 1.

    ``configured`` (``train.domain_weights``) names domains explicitly (domains it omits get 0); None means
    the validators' 0.5 / 0.5 when the domains present are exactly real and synthetic, else uniform.
    """
    present = sorted(set(domains))
    if configured:
        unknown = sorted(set(configured) - set(present))
        if unknown:
            raise StreetvisionError(f"config key 'train.domain_weights': unknown domain(s) {unknown}; the "
                                    f"train split has {present}")
        weights = {domain: float(configured.get(domain, 0.0)) for domain in present}
    elif set(present) == set(VALIDATOR_MIX):
        weights = dict(VALIDATOR_MIX)
    else:
        weights = dict.fromkeys(present, 1.0)
    total = sum(weights.values())
    if total <= 0:
        raise StreetvisionError(f"config key 'train.domain_weights': {configured} gives no domain a positive "
                                "weight")
    return {domain: weight / total for domain, weight in weights.items()}
