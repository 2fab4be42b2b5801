"""Showroom's library: catalogs, images, the embedder, losses, proposals, indexes and search.

Importing it sets the environment defaults the third-party stack must see before it loads
(``engine.runtime.configure_environment``); every other Showroom package imports it first.
"""

from engine.runtime import configure_environment

configure_environment()
