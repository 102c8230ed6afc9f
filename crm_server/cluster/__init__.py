"""Several crm_server instances on one store: signed forwarding between them and the fair share of accounts."""
