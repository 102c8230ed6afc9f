"""`python -m functions [--host H] [--port P]`: the functions host alone (same as `tgcrm functions`)."""

import sys

from functions.cli import main

sys.exit(main(sys.argv[1:]))
