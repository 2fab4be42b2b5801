"""Showroom's library: catalogs, images, the embedder, losses, proposals, indexes and search.

Importing it changes nothing in the process: the environment the third-party stack must see
before it loads (``engine.runtime.configure_environment``) is set by the entry points, each
CLI's ``main`` (``engine.runtime.run_cli``), ``serving.create_app`` and the tests' conftest.
"""
