"""The mssql-cdc input provider: provider (entry point), config, catalog (SQL), values, positions, encoding, the run loop (reader), cdc_admin (lifecycle)."""
