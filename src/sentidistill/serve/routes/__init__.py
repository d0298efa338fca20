"""The server's routes, one ``APIRouter`` per concern: :mod:`.openai` (/v1/completions, /v1/chat/completions,
/v1/models), :mod:`.analyze` (/v1/analyze, /v1/tasks), :mod:`.ops` (/health, /metrics). Each reads the app's
:class:`~sentidistill.serve.state.ServerState` from ``request.app.state.server``."""
