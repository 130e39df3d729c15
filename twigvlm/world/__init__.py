"""The shapes world: a synthetic visual question answering dataset small enough to train a VLM on a CPU."""
