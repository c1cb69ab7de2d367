"""MiniGPT-v2 dataset classes under the original's import path (see the import below)."""

from minigpt4.datasets.v2.conversations import MultiTaskConversationDataset

__all__ = ["MultiTaskConversationDataset"]
