"""Training: mining triplets, synthetic views, the training set and tf.data pipeline, the fit loop, MLflow tracking."""

import engine  # noqa: F401  (sets the environment before TensorFlow and MLflow load)
