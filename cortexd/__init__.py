"""cortexd: a single-host model-serving daemon for Cortex 0.23 projects.

See DESIGN.md (shared) for the architecture. Packages:
  spec/      cortex.yaml -> validated APISpec values
  core/      pure decisions (autoscale, rollout, placement, routing)
  backends/  replicas as processes or Docker containers (the only I/O with them)
  daemon/    asyncio orchestration (reconciler, watcher, control API)
  gateway/   the request path
"""

__version__ = "0.1.0"
