"""One module per dataset family / on-disk layout; each registers its loaders with
:func:`scl_plugin.data.registry.register` (every module here is imported by the registry)."""
