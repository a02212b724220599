"""mapcascade: generative web map tiles from remote-sensing imagery."""

__version__ = "0.1.0"
