"""API docs in a browser: Swagger UI from the `swagger-ui-py` wheel (no CDN), shared by crm_server and the
functions host."""
