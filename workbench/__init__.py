"""rl workbench: RL fine-tuning experiments on entropy, length and cost shaping (library part)."""

__version__ = "0.1.0"
