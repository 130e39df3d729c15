"""Training twigs with DeepSpeed on LLaVA-format data."""
