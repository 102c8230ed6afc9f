"""The `tgcrm` command line."""
