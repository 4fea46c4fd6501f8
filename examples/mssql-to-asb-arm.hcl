# mssql-to-asb-arm: the seed scenario with the queues managed through Azure
# Resource Manager (an Azure identity with a role on the namespace, e.g.
# "Azure Service Bus Data Owner" or Contributor), for teams that manage Azure
# with RBAC rather than SAS keys. Same queues, same plan as mssql-to-asb.hcl;
# switching a task between the two forms plans no changes.
#
# The identity comes from DefaultAzureCredential (environment, workload or
# managed identity, Azure CLI ...). Secrets come from the environment:
#   SQL_CONNECTION, AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP, ASB_NAMESPACE,
#   ASB_SEND_CONNECTION (optional: without it run sends with the Azure
#   credential, which then needs "Azure Service Bus Data Sender")

task "mssql-to-asb-arm" {
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
      subscription_id        = "{{ env \"AZURE_SUBSCRIPTION_ID\" }}"
      resource_group         = "{{ env \"AZURE_RESOURCE_GROUP\" }}"
      namespace              = "{{ env \"ASB_NAMESPACE\" }}"
      send_connection_string = "{{ env \"ASB_SEND_CONNECTION\" }}"
      queue_name             = "{table}_cdc_events"
    }
  }
}
