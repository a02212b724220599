"""The SCGM map generator as a library: imagery, cascade reference and scale in, map images out."""

from model.generator import Generator
from model.request import BlockRequest
from model.scale import ScaleInfo

__all__ = ["BlockRequest", "Generator", "ScaleInfo"]
