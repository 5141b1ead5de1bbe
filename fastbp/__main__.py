"""``python -m fastbp`` and the ``fastbp`` console script: the command line of :mod:`fastbp.cli`."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
