"""Benchmark evaluation: data readers, official scorers and the resumable runner behind
``python -m minigpt4.evaluate`` (MME, POPE, VQAv2)."""
