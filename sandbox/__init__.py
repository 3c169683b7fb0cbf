"""Sandbox backends for running untrusted code.

``config`` (the fleet's and bots' settings), ``policy`` (checks and scope keys),
``mounts`` (the host mount allow-list), ``backend`` (the interface),
``docker_backend`` (Docker Engine API: Docker or Podman), ``tools`` (the agent
tools over a session), ``image`` (building the image), ``cli``
(``callboard sandbox``). The actors live in ``actors.sandbox``; see docs/sandbox.md.
"""
