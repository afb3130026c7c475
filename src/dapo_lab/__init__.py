"""dapo-lab: DAPO and its ablations as small, tested, swappable components."""
__version__ = "0.1.0"
