"""`python -m stockade.cli` (how `stockade up --background` restarts itself)."""

from stockade.cli import main

main()
