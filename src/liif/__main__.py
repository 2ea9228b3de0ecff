"""``python -m liif``: the same command line as ``liif`` (and what torchrun launches). Python imports the liif
package, torch with it, before this file runs: a Ctrl-C in that import still prints a traceback here, where the
``liif`` script, which starts outside the package, prints one line."""

from liif_entry import main

if __name__ == "__main__":
    main()
