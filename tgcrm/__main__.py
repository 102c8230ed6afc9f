"""`python -m tgcrm` is `tgcrm`."""

import sys

from tgcrm.cli import main

sys.exit(main())
