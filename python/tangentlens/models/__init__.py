"""Networks written for tangentlens (no torchvision dependency): LPIPS trunks, StyleGAN2 and StyleGAN3
generators and the small demo β-VAEs trained on procedural dSprites."""

from tangentlens.models.stylegan2 import (
    MappingNetwork,
    StyleGAN2Generator,
    SynthesisBlock,
    SynthesisLayer,
    SynthesisNetwork,
    ToRGBLayer,
)
from tangentlens.models.stylegan3 import StyleGAN3Generator
from tangentlens.models.trunks import TRUNKS, AlexNetFeatures, SqueezeNet11Features, Trunk, VGG16Features
from tangentlens.models.vae import VAE, VAEGenerator, load_demo_vae

__all__ = [
    "TRUNKS",
    "AlexNetFeatures",
    "MappingNetwork",
    "SqueezeNet11Features",
    "StyleGAN2Generator",
    "StyleGAN3Generator",
    "SynthesisBlock",
    "SynthesisLayer",
    "SynthesisNetwork",
    "ToRGBLayer",
    "Trunk",
    "VAE",
    "VAEGenerator",
    "VGG16Features",
    "load_demo_vae",
]
