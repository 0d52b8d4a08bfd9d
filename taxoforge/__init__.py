"""taxoforge: taxonomy-driven generation and selection of SFT and preference data."""

__version__ = "0.1.0"
