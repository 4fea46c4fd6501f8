"""Built-in dstream providers. Each module also runs on its own: python -m providers.<module>."""

# name in task files -> (module, role, one-line description)
BUILTINS: dict[str, tuple[str, str, str]] = {
    "jsonl": ("providers.jsonl", "input", "replays a file of captured change envelopes"),
    "generator": ("providers.generator", "input", "emits synthetic changes as fast as it can"),
    "files": ("providers.files", "output", "appends each stream to its own JSON-lines file"),
    "mssql-cdc": ("providers.mssql_cdc.provider", "input", "reads SQL Server change data capture tables"),
    "asb-queues": ("providers.asb_queues.provider", "output", "one Azure Service Bus queue per stream, managed through Resource Manager"),
}

# Environment variables a built-in needs beyond the base set every provider gets
# (names, or prefixes ending in "*"). Nothing else of dstream's environment reaches it.
ENVIRONMENT: dict[str, tuple[str, ...]] = {
    # azure-identity's DefaultAzureCredential: service principal, workload and managed identity, Azure CLI
    "asb-queues": ("AZURE_*", "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "MSI_ENDPOINT", "MSI_SECRET"),
    # unixODBC's and FreeTDS's configuration; DefaultAzureCredential's for authentication = "azure"
    "mssql-cdc": ("ODBCSYSINI", "ODBCINI", "ODBCINSTINI", "FREETDSCONF", "FREETDS", "TDSVER", "TDSDUMP", "TDSDUMPCONFIG",
                  "AZURE_*", "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "MSI_ENDPOINT", "MSI_SECRET"),
}
