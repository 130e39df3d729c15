"""TwigVLM: grow a small twig on an early layer of a frozen LLaVA-1.5 and use it to prune visual tokens
(twig-guided token pruning) and to draft tokens (self-speculative decoding)."""

__version__ = "0.1.0"
