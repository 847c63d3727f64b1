"""`python -m convkit` (and `torchrun -m convkit`) runs the command line."""

from convkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
