"""Vision Transformer family (ViT, DeiT, CLIP image tower, DINOv2); filled in by the proxy work."""
