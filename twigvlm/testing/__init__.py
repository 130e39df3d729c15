"""Offline builders of tiny checkpoints and tokenizers in the formats real users have (for tests and demos)."""
