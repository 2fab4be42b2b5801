"""The embedding model: the Keras network, its losses, and the ``Embedder`` that runs a saved model."""
