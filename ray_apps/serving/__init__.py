"""Online inference: the universe's cross-section scored once per (model version, as_of).

A layer above ``stores`` and ``models``, below ``jobs`` and ``cli``: :mod:`.cross_section`
reads the online store, :mod:`.models` loads a model from the registry, :mod:`.scoring`
scores, caches and answers per symbol.
"""
