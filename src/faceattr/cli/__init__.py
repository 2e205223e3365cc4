"""The command line: one module per command group; each command parses, calls one library function, prints.

The top layer: it may import every other layer; nothing imports it.
"""

from faceattr.cli.main import main

__all__ = ["main"]
