"""Building blocks below every other layer (no imports from the rest of sb3_vla).

- :mod:`~sb3_vla.core.keys`: observation and info key names;
- :mod:`~sb3_vla.core.imports`: the one importer of ``package.module:Name`` strings;
- :mod:`~sb3_vla.core.options`: the one option grammar (``key=value`` pairs, values parsed as YAML);
- :mod:`~sb3_vla.core.residual_math` and :mod:`~sb3_vla.core.residual_map`: how a residual composes with the
  base's action;
- :mod:`~sb3_vla.core.schedule`: the residual-scale schedule (training wrappers and replay read the same one).
"""
