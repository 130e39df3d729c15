"""The engine: prefill with pruning, KV caches, decoding strategies, streaming, generate()."""
