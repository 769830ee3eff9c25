"""etfuse core: settings, target grid, provider readers, harmonised store, synthetic world."""

__version__ = "0.1.0"
