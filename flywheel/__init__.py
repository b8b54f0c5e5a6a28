"""Flywheel: online, human-in-the-loop RLHF for a deployed chatbot."""

__version__ = "0.1.0"
