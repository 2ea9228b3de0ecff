"""``python -m liif``: the same command line as ``liif`` (and what torchrun launches). Python imports the liif
package, torch with it, before this file runs: a Ctrl-C there is caught in ``liif/__init__``, one line as here."""

from liif_entry import main

if __name__ == "__main__":
    main()
