"""The 2012 two-tower AlexNet on alexnet_kernels' ops (or torch's, kernels="torch"): see alexnet.model."""
from .model import AlexNet, Tower

__all__ = ["AlexNet", "Tower"]
