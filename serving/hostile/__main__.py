"""``python -m serving.hostile``: the command of ``serving.hostile.cli``."""

from serving.hostile.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
