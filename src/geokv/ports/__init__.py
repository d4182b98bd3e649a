"""The small interfaces the rest is built on: Clock, Disk (and Transport in runtime/)."""

from .clock import Clock, RealClock
from .disk import Disk, DiskFile, RealDisk

__all__ = ["Clock", "Disk", "DiskFile", "RealClock", "RealDisk"]
