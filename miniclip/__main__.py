"""`python -m miniclip` runs the command line (see cli.py)."""
import sys

from miniclip.cli import main

sys.exit(main())
