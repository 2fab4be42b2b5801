"""Side-by-side measurements that print ratios."""

import engine  # noqa: F401  (sets the environment before TensorFlow and ScaNN load)
