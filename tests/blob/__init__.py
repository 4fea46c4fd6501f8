"""The Azure Blob Storage state backend against Azurite: in-process and through the built zipapp."""
