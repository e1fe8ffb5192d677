"""LLM-written captions checked against the OSM tags.

``facts`` (fact phrases from tag statistics) -> ``prompts`` -> a backend (``local``:
transformers/GGUF, ``openai_http``: OpenAI-compatible servers; ``backends``: the interface,
the embedded default and the factory) through ``cache`` -> ``validator`` (with ``lexicon``) ->
``stage`` (the ``llm_caption`` stage, with ``audit``). A run's counters are summarised for
``rsdata inspect`` by :mod:`rsdata.reports.llm_section` (outside this package, so inspect does
not import it).
"""
