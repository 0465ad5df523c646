"""``python -m pytest_mlxvlm``."""

from .cli.main import main

raise SystemExit(main())
