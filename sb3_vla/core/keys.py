"""The names shared across layers: observation keys the wrappers add and info keys they report.

One home for each name, so the bases, wrappers, extractor, buffers and policies agree without importing each
other.
"""

#: observation key of the frozen base's action (the action wrapper's input, the policy's view of the base)
ACTION_KEY = "vla_action"
#: observation key of the frozen base's embedding
EMBEDDING_KEY = "vla_embedding"
#: observation key of the base's action mapped into the residual's own space (by a ``ResidualMap``)
MAPPED_ACTION_KEY = "vla_action_mapped"
#: info key: the residual actually executed, in the agent's [-1, 1] units
RESIDUAL_INFO_KEY = "residual"
#: info key: whether this decision carried the residual (False: the pure base ran)
APPLIED_INFO_KEY = "residual_applied"

__all__ = ["ACTION_KEY", "APPLIED_INFO_KEY", "EMBEDDING_KEY", "MAPPED_ACTION_KEY", "RESIDUAL_INFO_KEY"]
