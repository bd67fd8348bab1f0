"""Network trunks written for tangentlens (no torchvision dependency)."""

from tangentlens.models.trunks import TRUNKS, AlexNetFeatures, SqueezeNet11Features, Trunk, VGG16Features

__all__ = ["TRUNKS", "AlexNetFeatures", "SqueezeNet11Features", "Trunk", "VGG16Features"]
