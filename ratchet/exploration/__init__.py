"""Exploration: a logged random share of would-be-blocked payments let through (see policy)."""

from ratchet.exploration.file import exploration_policy_from_text, load_exploration_policy
from ratchet.exploration.policy import ExplorationPolicy, Explorer, draw

__all__ = ["ExplorationPolicy", "Explorer", "draw", "exploration_policy_from_text", "load_exploration_policy"]
