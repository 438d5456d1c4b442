"""cortexd: a single-host model-serving daemon for Cortex 0.23 projects.

See docs/architecture.md for the architecture as built. Packages:
  spec/      cortex.yaml -> validated APISpec values
  core/      pure decisions (autoscale, rollout, placement, routing, health, API status)
  backends/  replicas as processes or Docker containers (the only modules that run them)
  daemon/    asyncio orchestration (reconciler, watcher, autoscaler, control API)
  gateway/   the request path
  kube/      `cortexd build` and `cortexd export kubernetes`
  ui/        renderers of the status snapshot for the CLI (cli.py)
  status.py  the typed status model every view renders
"""

__version__ = "0.1.0"
