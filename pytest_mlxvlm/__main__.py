"""``python -m pytest_mlxvlm``."""

from .cli import main

raise SystemExit(main())
