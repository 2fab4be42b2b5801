"""Training: mining triplets, synthetic views, the training set and tf.data pipeline, the fit loop, MLflow tracking."""
