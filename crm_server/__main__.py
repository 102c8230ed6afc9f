"""`python -m crm_server [server|keys|login] ...`: the crm_server commands without the `tgcrm` wrapper."""

from crm_server.cli import main

raise SystemExit(main())
