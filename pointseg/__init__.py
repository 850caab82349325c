"""pointseg: segment remote-sensing images pixel by pixel from a few clicked points per image."""

__version__ = "0.1.0"
