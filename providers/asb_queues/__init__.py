"""The asb-queues output provider: provider (entry point), settings, management (ARM), queue_admin (lifecycle), delivery (AMQP)."""
