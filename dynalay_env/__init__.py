"""DynaLay-Gym: learned adaptive depth over fixed-point-iteration networks, as Gymnasium environments."""

__version__ = "0.1.0"
