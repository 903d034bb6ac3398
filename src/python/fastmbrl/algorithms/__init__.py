"""Model-based RL algorithms, one file each (read top to bottom)."""
