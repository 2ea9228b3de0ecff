"""``python -m liif``: the same command line as ``liif`` (and what torchrun launches)."""

from liif.cli import main

if __name__ == "__main__":
    main()
