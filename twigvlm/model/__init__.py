"""The base VLM (vision tower -> projector -> Llama decoder), the twig, and checkpoint I/O."""
