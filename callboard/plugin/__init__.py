"""The plugin SDK: what a plugin author imports.

    from callboard.plugin import Context, Plugin, command, on

A plugin is a folder (or an installed package) with a ``plugin.yaml`` manifest
and a ``Plugin`` subclass whose listeners are marked with ``@on`` or
``@command``. The engine runs it in a supervised runner process; see
docs/plugins.md.
"""

from callboard.engine.plugin_protocol import ListenerInfo, PluginManifest
from callboard.plugin.context import Api, Context, Sandbox
from callboard.plugin.plugin import Plugin, command, on

__all__ = ["Api", "Context", "ListenerInfo", "Plugin", "PluginManifest", "Sandbox", "command", "on"]
