"""`python cli.py ...` is the same as the `textsvae` command."""
from textsvae.cli import main

if __name__ == "__main__":
    main()
