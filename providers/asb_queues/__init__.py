"""The asb-queues output provider's parts: settings, management (ARM), lifecycle, delivery (AMQP)."""
