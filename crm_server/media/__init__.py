"""Files crm_server holds for a while: incoming media on disk, their signed links, and outgoing files it fetches."""
