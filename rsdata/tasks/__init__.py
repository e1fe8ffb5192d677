"""Tasks besides captioning, derived from the same OSM join: question-answer pairs (``vqa``),
referring expressions with boxes (``grounding``) and scene labels (``scene_label``); their
exports (``rsdata export``) to the RSVQA, COCO, Karpathy and folder-per-class layouts.

All three stages read the join's per-object geometry (``meta["osm"]["objects"]``: visible
clipped objects in the stored image's pixel space) through :mod:`rsdata.tasks.objects`, which
groups them into *referents* the same way the join counts objects (``count_objects``).
"""
