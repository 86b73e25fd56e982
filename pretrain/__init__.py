"""DINO self-distillation pretraining of ViT backbones for dinotrack."""
