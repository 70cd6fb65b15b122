"""Online inference: the universe's cross-section scored once per (model version, as_of).

A layer above ``stores`` and ``models``, below ``jobs`` and ``cli``: :mod:`.cross_section`
reads the online store, :mod:`.models` loads a model from the registry, :mod:`.scoring`
scores, caches and answers per symbol. A server holds one scorer per served model::

    store = online_store(settings)
    model = load_served_model(settings.mlflow.uri, "sp500-mlp", "champion", {spec_version})
    scorer = OnlineScorer(store, model, max_age=timedelta(minutes=5))
    entries = scorer.lookup(["AAPL", "MSFT"])  # ScoreEntry or ErrorEntry per symbol

Each :meth:`~.scoring.OnlineScorer.current` costs one Redis round trip (the latest vectors'
times); a new ``as_of`` also reads the windows and runs the model, once for every request.
"""
