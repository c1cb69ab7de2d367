"""MiniGPT-v2's training datasets: the formats of ``train_configs/minigptv2_finetune.yaml``."""
