"""Runners; importing this package registers ``runner_base``."""

from minigpt4.runners.runner_base import RunnerBase

__all__ = ["RunnerBase"]
