"""Networks written for tangentlens (no torchvision dependency): LPIPS trunks and a StyleGAN2 generator."""

from tangentlens.models.stylegan2 import (
    MappingNetwork,
    StyleGAN2Generator,
    SynthesisBlock,
    SynthesisLayer,
    SynthesisNetwork,
    ToRGBLayer,
)
from tangentlens.models.trunks import TRUNKS, AlexNetFeatures, SqueezeNet11Features, Trunk, VGG16Features

__all__ = [
    "TRUNKS",
    "AlexNetFeatures",
    "MappingNetwork",
    "SqueezeNet11Features",
    "StyleGAN2Generator",
    "SynthesisBlock",
    "SynthesisLayer",
    "SynthesisNetwork",
    "ToRGBLayer",
    "Trunk",
    "VGG16Features",
]
