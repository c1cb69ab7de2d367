"""The synthetic "shapes world": images with known content, their captions, and tools on it."""
