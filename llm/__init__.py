"""llm: a small GPT taken through pre-training, SFT, reward modelling and preference optimization."""

__version__ = "0.1.0"
