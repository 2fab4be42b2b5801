"""Search indexes: the ``SearchIndex`` backends and their registry, tuning to a recall target, catalog index folders,
the serving folder a build writes, its generations, and embedding on Ray."""
