"""alexnet architectures (torchvision/timm-compatible layouts); filled in by the models work."""
