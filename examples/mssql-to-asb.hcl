# mssql-to-asb: the seed scenario - SQL Server CDC changes of dbo.Persons,
# dbo.Orders and dbo.Customers to one Azure Service Bus queue per table
# (Persons_cdc_events, ...), with the queues managed by dstream.
#
# Try it: dstream validate examples/mssql-to-asb.hcl (with the variables below set),
# then plan, init, run --once, status, destroy. docs/mssql-cdc.md and
# docs/asb-queues.md describe every config key.
#
# Secrets come from the environment, never from this file:
#   SQL_CONNECTION, ASB_CONNECTION, AZURE_SUBSCRIPTION_ID,
#   AZURE_RESOURCE_GROUP, ASB_NAMESPACE

task "mssql-to-asb" {
  type = "providers"

  input {
    provider = "mssql-cdc"
    config {
      connection_string = "{{ env \"SQL_CONNECTION\" }}"
      tables            = ["Persons", "Orders", "Customers"]
    }
  }

  output {
    provider = "asb-queues"
    config {
      subscription_id   = "{{ env \"AZURE_SUBSCRIPTION_ID\" }}"
      resource_group    = "{{ env \"AZURE_RESOURCE_GROUP\" }}"
      namespace         = "{{ env \"ASB_NAMESPACE\" }}"
      connection_string = "{{ env \"ASB_CONNECTION\" }}"
      queue_name        = "{table}_cdc_events"
    }
  }
}

# Keep state in Azure Blob Storage instead of next to this file (next release):
# backend "azureblob" {
#   account_url = "https://<account>.blob.core.windows.net"
#   container   = "dstream-state"
#   prefix      = "prod/"
# }
