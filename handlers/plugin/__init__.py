"""The host side of the plugin handler: config, manifests, the runner connection, the hub."""
