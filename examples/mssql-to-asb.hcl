# mssql-to-asb: the seed scenario - SQL Server CDC changes of dbo.Persons,
# dbo.Orders and dbo.Customers to one Azure Service Bus queue per table
# (Persons_cdc_events, ...), with the queues managed by dstream through the
# namespace's own management API: nothing but two connection strings.
#
# Try it: dstream validate examples/mssql-to-asb.hcl (with the variables below set),
# then plan, init, run --once, status, destroy. docs/mssql-cdc.md and
# docs/asb-queues.md describe every config key; mssql-to-asb-arm.hcl beside
# this file manages the queues through Azure Resource Manager instead.
#
# Secrets come from the environment, never from this file:
#   SQL_CONNECTION  the SQL Server connection string
#   ASB_CONNECTION  a Service Bus SAS connection string whose key has Manage
#                   (plan, init, destroy and status create and delete queues)
# Least privilege: add  send_connection_string = "{{ env \"ASB_SEND_CONNECTION\" }}"
# with a Send-only key, and run sends with that one instead.

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
