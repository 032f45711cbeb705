"""grucli's version, in a module of its own: the output and the command line name it without
importing the package's Python API (which imports them back).

May import: nothing.
"""

__version__ = "0.2.0"
