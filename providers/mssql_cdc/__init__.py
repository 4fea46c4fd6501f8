"""mssql-cdc internals: config, catalog (SQL), values, positions, encoding, the run loop, lifecycle."""
