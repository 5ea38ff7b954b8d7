"""The served model: a model directory loaded by its family, routed over the policy registry.

The worker imports this package and nothing else of `models` besides the base contract.
"""

from models.serving.served import ModelSetupError, ServedModelBuilder, ServingOptions, load_served_model

__all__ = ["ModelSetupError", "ServedModelBuilder", "ServingOptions", "load_served_model"]
