"""Synthetic scenes: semantic layouts from OpenStreetMap, a small layout-conditioned diffusion
model (``rsdata train-synth``) and the pieces the ``synthetic`` source uses.

- :mod:`rsdata.synth.layouts`: the fixed class -> channel map (``rsdata-layout-v1``) and the
  rasterizer that turns a tile's OSM objects (``meta["osm"]["objects"]``) into a class map
  (stored as the ``layout.png`` member: a palette PNG whose pixel values are class indices).
- :mod:`rsdata.synth.layout_stage`: the ``layout`` stage (writes ``layout.png``).
- :mod:`rsdata.synth.grid`: a grid of cells over an OSM extract in a local UTM CRS.
- :mod:`rsdata.synth.modeldir`: what a model directory holds (without loading it) and its digest.
- :mod:`rsdata.synth.generate`: the lazily loaded pipeline that turns layouts / prompts into images.
- :mod:`rsdata.synth.pipeline`: ``LayoutDiffusionPipeline``, the project's own diffusers pipeline.
- :mod:`rsdata.synth.training`: ``rsdata train-synth``.

Everything that imports torch or diffusers does so inside functions or in ``pipeline`` /
``generate`` / ``training``, so the core stays light.
"""
