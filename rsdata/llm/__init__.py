"""LLM-written captions checked against the OSM tags.

``facts`` (fact phrases from tag statistics) -> ``prompts`` -> a backend (``local``:
transformers/GGUF, ``openai_http``: OpenAI-compatible servers; ``backends``: the interface,
the embedded default and the factory) through ``cache`` -> ``validator`` (with ``lexicon``) ->
``stage`` (the ``llm_caption`` stage, with ``audit``). ``report`` summarises a run's counters
for ``rsdata inspect``.
"""
