"""Tests of rsdata.osm.vocabulary: OSM tags -> English caption phrases."""

from __future__ import annotations

import pickle
from importlib import resources

import pytest
import yaml

from rsdata.errors import RsdataError
from rsdata.osm.vocabulary import (
    CATEGORIES,
    Phrase,
    Vocabulary,
    VocabularyError,
    number_phrase,
    pluralize,
)


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return Vocabulary.default()


# --- known tags -------------------------------------------------------------------------------

KNOWN = [
    # key, value, singular, plural, mass, category
    ("highway", "residential", "residential road", "residential roads", False, "road"),
    ("highway", "track", "dirt track", "dirt tracks", False, "road"),
    ("highway", "trunk", "highway", "highways", False, "road"),
    ("highway", "primary", "main road", "main roads", False, "road"),
    ("highway", "service", "service road", "service roads", False, "road"),
    ("highway", "unclassified", "minor road", "minor roads", False, "road"),
    ("highway", "footway", "footpath", "footpaths", False, "road"),
    ("highway", "steps", "flight of steps", "flights of steps", False, "road"),
    ("building", "yes", "building", "buildings", False, "building"),
    ("building", "house", "house", "houses", False, "building"),
    ("building", "garage", "garage", "garages", False, "building"),
    ("building", "residential", "residential building", "residential buildings", False, "building"),
    ("building", "church", "church", "churches", False, "building"),
    ("building", "factory", "factory", "factories", False, "building"),
    ("building", "terrace", "row of terraced houses", "rows of terraced houses", False, "building"),
    ("landuse", "farmland", "farmland", "farmland", True, "landuse"),
    ("landuse", "forest", "forest", "forest", True, "landcover"),
    ("landuse", "grass", "grass", "grass", True, "landcover"),
    ("landuse", "residential", "residential area", "residential areas", False, "landuse"),
    ("landuse", "construction", "construction site", "construction sites", False, "landuse"),
    ("landuse", "reservoir", "reservoir", "reservoirs", False, "water"),
    ("natural", "water", "water", "water", True, "water"),
    ("natural", "wood", "woodland", "woodland", True, "landcover"),
    ("natural", "tree", "tree", "trees", False, "landcover"),
    ("natural", "tree_row", "row of trees", "rows of trees", False, "landcover"),
    ("natural", "beach", "beach", "beaches", False, "landcover"),
    ("leisure", "nature_reserve", "nature reserve", "nature reserves", False, "leisure"),
    ("leisure", "pitch", "sports field", "sports fields", False, "leisure"),
    ("leisure", "swimming_pool", "swimming pool", "swimming pools", False, "leisure"),
    ("waterway", "river", "river", "rivers", False, "water"),
    ("waterway", "dam", "dam", "dams", False, "infrastructure"),
    ("railway", "rail", "railway track", "railway tracks", False, "railway"),
    ("amenity", "parking", "parking lot", "parking lots", False, "amenity"),
    ("amenity", "school", "school grounds", "school grounds", False, "amenity"),
    ("man_made", "pier", "pier", "piers", False, "infrastructure"),
    ("man_made", "water_works", "waterworks", "waterworks", False, "infrastructure"),
    ("aeroway", "runway", "runway", "runways", False, "infrastructure"),
    ("power", "line", "power line", "power lines", False, "infrastructure"),
    ("water", "lake", "lake", "lakes", False, "water"),
    ("wetland", "marsh", "marsh", "marsh", True, "landcover"),
]


@pytest.mark.parametrize(("key", "value", "singular", "plural", "mass", "category"), KNOWN)
def test_known_tags(vocab, key, value, singular, plural, mass, category):
    assert vocab.phrase(key, value) == Phrase(singular, plural, mass, category, known=True)


def test_keys_cover_the_visible_osm_keys(vocab):
    expected = {
        "building",
        "highway",
        "railway",
        "waterway",
        "natural",
        "landuse",
        "leisure",
        "amenity",
        "man_made",
        "aeroway",
        "power",
        "water",
        "wetland",
    }
    assert expected <= vocab.keys()
    assert isinstance(vocab.keys(), frozenset)
    for attribute in ("surface", "area", "name", "lanes", "maxspeed", "building:levels"):
        assert attribute not in vocab.keys()


def test_default_is_cached(vocab):
    assert Vocabulary.default() is vocab


def test_values_are_normalised(vocab):
    road = vocab.phrase("highway", "residential")
    assert vocab.phrase("highway", "residential;track") == road
    assert vocab.phrase("highway", " Residential ") == road
    assert vocab.phrase("highway", ";residential") == road
    assert vocab.phrase(" highway ", "residential") == road
    assert vocab.phrase("leisure", "nature reserve") == vocab.phrase("leisure", "nature_reserve")


# --- fallbacks --------------------------------------------------------------------------------

FALLBACKS = [
    ("highway", "foo_bar", "foo bar road", "foo bar roads", "road"),
    ("building", "xyz", "building", "buildings", "building"),
    ("building", "unknown", "building", "buildings", "building"),
    ("landuse", "logging", "logging area", "logging areas", "landuse"),
    ("landuse", "military_area", "military area", "military areas", "landuse"),  # no "area area"
    ("natural", "glacier_tongue", "glacier tongue", "glacier tongues", "landcover"),
    ("waterway", "canyon_creek", "canyon creek", "canyon creeks", "water"),
    ("railway", "goods_line", "goods line railway", "goods line railways", "railway"),
    ("leisure", "hedge_maze", "hedge maze", "hedge mazes", "leisure"),
    ("water", "tarn", "tarn", "tarns", "water"),
]


@pytest.mark.parametrize(("key", "value", "singular", "plural", "category"), FALLBACKS)
def test_fallbacks(vocab, key, value, singular, plural, category):
    phrase = vocab.phrase(key, value)
    assert phrase == Phrase(singular, plural, False, category, known=False)


def test_fallback_of_a_mass_key_has_no_plural(vocab):
    phrase = vocab.phrase("wetland", "peat_swamp")
    assert phrase == Phrase("peat swamp", "peat swamp", True, "landcover", known=False)


def test_fallback_uses_the_first_of_a_value_list(vocab):
    assert vocab.phrase("highway", "foo;bar").singular == "foo road"


@pytest.mark.parametrize(
    "value", ["Foo123", "3", "http://example.com", "a_b_c_d_e_f", "x/y", "ünïcode"]
)
def test_values_that_are_not_words_do_not_fill_a_template(vocab, value):
    assert vocab.phrase("highway", value) is None
    # a template without {value} does not care
    assert vocab.phrase("building", value) == Phrase(
        "building", "buildings", False, "building", known=False
    )


# --- not features -----------------------------------------------------------------------------

NOT_FEATURES = [
    ("building", "no"),
    ("building", "construction"),
    ("building", "entrance"),
    ("highway", "no"),
    ("highway", "proposed"),
    ("highway", "construction"),
    ("highway", "abandoned"),
    ("highway", "disused"),
    ("highway", "yes"),
    ("highway", "crossing"),
    ("highway", "street_lamp"),
    ("highway", "bus_stop"),
    ("railway", "abandoned"),
    ("railway", "switch"),
    ("railway", "level_crossing"),
    ("amenity", "yes"),
    ("amenity", "restaurant"),
    ("amenity", "bench"),
    ("man_made", "yes"),
    ("man_made", "surveillance"),
    ("natural", "yes"),
    ("landuse", "yes"),
    ("landuse", "proposed"),
    ("landuse", "no;farmland"),  # the first value counts
    ("leisure", "fitness_centre"),
    ("power", "cable"),
    ("area", "yes"),
    ("surface", "asphalt"),
    ("name", "Main Street"),
    ("highway", ""),
    ("highway", " ; "),
]


@pytest.mark.parametrize(("key", "value"), NOT_FEATURES)
def test_not_features(vocab, key, value):
    assert vocab.phrase(key, value) is None


# --- English helpers --------------------------------------------------------------------------

PLURALS = [
    ("building", "buildings"),
    ("residential road", "residential roads"),
    ("box", "boxes"),
    ("bus", "buses"),
    ("campus", "campuses"),
    ("church", "churches"),
    ("marsh", "marshes"),
    ("waltz", "waltzes"),
    ("category", "categories"),
    ("factory", "factories"),
    ("highway", "highways"),
    ("valley", "valleys"),
    ("leaf", "leaves"),
    ("knife", "knives"),
    ("wharf", "wharves"),
    ("roof", "roofs"),
    ("cliff", "cliffs"),
    ("man", "men"),
    ("fisherman", "fishermen"),
    ("human", "humans"),
    ("woman", "women"),
    ("child", "children"),
    ("potato", "potatoes"),
    ("silo", "silos"),
    ("analysis", "analyses"),
    ("stomach", "stomachs"),
    ("sheep", "sheep"),
    ("aircraft", "aircraft"),
    ("water", "water"),
    ("farmland", "farmland"),
    ("grass", "grass"),
    ("steps", "steps"),
    ("grounds", "grounds"),
    ("men", "men"),
    ("leaves", "leaves"),
    ("row of trees", "rows of trees"),
    ("flight of steps", "flights of steps"),
    ("drive-in", "drive-ins"),
    ("Church", "Churches"),
    ("Man", "Men"),
    ("OX", "OXEN"),
    ("track 2", "track 2"),
    ("", ""),
]


@pytest.mark.parametrize(("singular", "plural"), PLURALS)
def test_pluralize(singular, plural):
    assert pluralize(singular) == plural


BUILDING = Phrase("building", "buildings", False, "building")
FARMLAND = Phrase("farmland", "farmland", True, "landuse")


@pytest.mark.parametrize(
    ("n", "phrase", "text"),
    [
        (0, BUILDING, "no buildings"),
        (1, BUILDING, "one building"),
        (2, BUILDING, "two buildings"),
        (3, BUILDING, "three buildings"),
        (10, BUILDING, "ten buildings"),
        (11, BUILDING, "11 buildings"),
        (12, BUILDING, "12 buildings"),
        (0, FARMLAND, "no farmland"),
        (1, FARMLAND, "one area of farmland"),
        (3, FARMLAND, "three areas of farmland"),
        (25, FARMLAND, "25 areas of farmland"),
    ],
)
def test_number_phrase(n, phrase, text):
    assert number_phrase(n, phrase) == text


def test_number_phrase_rejects_bad_counts():
    with pytest.raises(ValueError):
        number_phrase(-1, BUILDING)
    with pytest.raises(TypeError):
        number_phrase(2.0, BUILDING)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        number_phrase(True, BUILDING)


# --- overrides --------------------------------------------------------------------------------


def test_merged_overrides_one_tag(vocab):
    custom = vocab.merged({"highway=track": "farm track"})
    assert custom.phrase("highway", "track") == Phrase(
        "farm track", "farm tracks", False, "road", known=True
    )
    assert custom.phrase("highway", "residential") == vocab.phrase("highway", "residential")
    # the original is untouched, and so is the cached default
    assert vocab.phrase("highway", "track").singular == "dirt track"
    assert Vocabulary.default().phrase("highway", "track").singular == "dirt track"


def test_merged_mapping_override_and_removal(vocab):
    custom = vocab.merged(
        {
            "natural=scrub": {"singular": "bush", "plural": "bushland", "mass": False},
            "landuse=meadow": {"singular": "pasture", "mass": True},
            "building=shed": None,
            "highway=proposed": "planned road",
        }
    )
    assert custom.phrase("natural", "scrub") == Phrase("bush", "bushland", False, "landcover")
    assert custom.phrase("landuse", "meadow") == Phrase("pasture", "pasture", True, "landcover")
    assert custom.phrase("building", "shed") is None
    # a plain string keeps the mass and category of the phrase it replaces
    cropland = vocab.merged({"landuse=farmland": "cropland"}).phrase("landuse", "farmland")
    assert cropland == Phrase("cropland", "cropland", True, "landuse")
    lake = vocab.merged({"natural=water": "lake"}).phrase("natural", "water")
    assert lake == Phrase("lake", "lake", True, "water")
    assert custom.phrase("highway", "proposed").singular == "planned road"


def test_merged_can_add_a_tag_of_a_new_key(vocab):
    custom = vocab.merged({"historic=castle": {"singular": "castle", "category": "building"}})
    assert "historic" in custom.keys()
    assert "historic" not in vocab.keys()
    assert custom.phrase("historic", "castle") == Phrase("castle", "castles", False, "building")
    assert custom.phrase("historic", "memorial") is None  # only the listed value


def test_merged_key_entry(vocab):
    custom = vocab.merged(
        {
            "amenity": {"default": "{value} grounds", "values": {"zoo": "zoo"}, "ignore": ["bar"]},
            "sport": {"category": "leisure", "values": {"tennis": "tennis court"}},
        }
    )
    assert custom.phrase("amenity", "parking") == vocab.phrase("amenity", "parking")
    assert custom.phrase("amenity", "zoo").singular == "zoo"
    assert custom.phrase("amenity", "bar") is None
    assert custom.phrase("amenity", "fire_pit").singular == "fire pit grounds"
    assert custom.phrase("sport", "tennis").plural == "tennis courts"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"highway=track": 3}, "highway=track"),
        ({"highway=track": {"plural": "tracks"}}, "singular"),
        ({"highway=track": {"singular": "track", "colour": "red"}}, "colour"),
        ({"highway=track": {"singular": "x", "category": "roads"}}, "roads"),
        ({"highway=": "road"}, "highway="),
        ({"=track": "road"}, "=track"),
        ({"landuse": "farm"}, "landuse"),
        ({"newkey": {"values": {}}}, "category"),
    ],
)
def test_merged_rejects_bad_overrides(vocab, overrides, message):
    with pytest.raises(VocabularyError, match=message):
        vocab.merged(overrides)


# --- files ------------------------------------------------------------------------------------


def test_from_file_reads_the_documented_format(tmp_path):
    path = tmp_path / "vocab.yaml"
    path.write_text(
        "# a comment\n"
        "highway:\n"
        "  category: road\n"
        "  default: '{value} lane'\n"
        "  values:\n"
        "    residential: street\n"
        "    steps: {singular: stair, plural: stairs}\n"
        "  ignore: [crossing, no]\n"
        "crop:\n"
        "  category: landcover\n"
        "  mass: true\n"
        "  default: '{value} field'\n"
        "  values:\n"
        "    yes: crop field\n"
        "    on: 'crop field (on)'\n",
        encoding="utf-8",
    )
    custom = Vocabulary.from_file(path)
    assert custom.keys() == {"highway", "crop"}
    assert custom.phrase("highway", "residential") == Phrase("street", "streets", False, "road")
    assert custom.phrase("highway", "steps").plural == "stairs"
    assert custom.phrase("highway", "bar").singular == "bar lane"
    assert custom.phrase("highway", "crossing") is None
    # yes/on are strings here, not YAML 1.1 booleans
    assert custom.phrase("crop", "yes") == Phrase("crop field", "crop field", True, "landcover")
    assert custom.phrase("crop", "on").singular == "crop field (on)"
    assert custom.phrase("crop", "wheat") == Phrase(
        "wheat field", "wheat field", True, "landcover", known=False
    )
    assert Vocabulary.from_file(str(path)) == custom


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "mapping of OSM key"),
        ("highway: [1, 2]\n", "entry 'highway'"),
        ("highway:\n  mass: false\n", "entry 'highway': 'category' is missing"),
        ("highway:\n  category: roads\n", "entry 'highway': category 'roads'"),
        ("highway:\n  category: road\n  colour: red\n", "entry 'highway': unknown field"),
        ("highway:\n  category: road\n  mass: yes\n", "entry 'highway': 'mass' must be true"),
        ("highway:\n  category: road\n  default: '{name} road'\n", "placeholder"),
        ("highway:\n  category: road\n  default: '{value road'\n", "malformed"),
        ("highway:\n  category: road\n  default: ''\n", "'default' must be a non-empty"),
        ("highway:\n  category: road\n  values: [a]\n", "'values' must be a mapping"),
        ("highway:\n  category: road\n  ignore: crossing\n", "'ignore' must be a list"),
        ("highway:\n  category: road\n  values:\n    track: ''\n", "value 'track'"),
        ("highway:\n  category: road\n  values:\n    track: 3\n", "value 'track'"),
        (
            "highway:\n  category: road\n  values:\n    track: {plural: x}\n",
            "value 'track': 'singular' is missing",
        ),
        (
            "highway:\n  category: road\n  values:\n    track: {singular: x, size: 2}\n",
            "value 'track': unknown field",
        ),
        (
            "highway:\n  category: road\n  values:\n    track: {singular: x, mass: true, "
            "plural: xs}\n",
            "value 'track': a mass noun has no plural",
        ),
        ("highway:\n  category: road\n  values:\n    true: road\n", "quote it"),
        ("highway:\n  category: road\n  values:\n    track: [road]\n", "value 'track'"),
        ("highway: {category: road\n", "not valid YAML"),
        ("'a=b':\n  category: road\n", "'a=b'"),
    ],
)
def test_from_file_errors_name_the_bad_entry(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(VocabularyError, match=message) as info:
        Vocabulary.from_file(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, RsdataError)


def test_from_file_missing(tmp_path):
    with pytest.raises(FileNotFoundError):
        Vocabulary.from_file(tmp_path / "nope.yaml")


# --- the packaged file ------------------------------------------------------------------------


def _packaged_yaml() -> dict:
    text = (
        resources.files("rsdata")
        .joinpath("data")
        .joinpath("osm_vocabulary.yaml")
        .read_text(encoding="utf-8")
    )
    # read the raw file with the vocabulary's own rule: yes/no are strings
    from rsdata.osm.vocabulary import _VocabularyLoader

    return yaml.load(text, Loader=_VocabularyLoader)  # noqa: S506 - a SafeLoader


def test_every_packaged_entry_loads(vocab):
    raw = _packaged_yaml()
    assert set(raw) == vocab.keys()
    count = 0
    for key, entry in raw.items():
        for value in entry.get("values") or {}:
            phrase = vocab.phrase(key, value)
            assert phrase is not None, f"{key}={value}"
            assert phrase.known, f"{key}={value}"
            assert phrase.singular.strip() and phrase.plural.strip(), f"{key}={value}"
            assert phrase.singular == phrase.singular.strip()
            assert phrase.category in CATEGORIES, f"{key}={value}"
            if phrase.mass:
                assert phrase.plural == phrase.singular, f"{key}={value}"
            else:
                assert not phrase.plural.endswith(("eses", "ss")), f"{key}={value}"
            count += 1
        for value in entry.get("ignore") or []:
            assert vocab.phrase(key, value) is None, f"{key}={value}"
    assert count == len(vocab) == len(vocab.entries())
    assert 150 <= count <= 300


def test_packaged_file_is_tidy():
    raw = _packaged_yaml()
    for key, entry in raw.items():
        assert entry["category"] in CATEGORIES, key
        ignored = set(entry.get("ignore") or [])
        listed = set(entry.get("values") or {})
        assert not ignored & listed, f"{key}: both listed and ignored: {ignored & listed}"
        for value in listed | ignored:
            assert value == value.lower().strip() and " " not in value, f"{key}={value}"


def test_vocabulary_pickles(vocab):
    clone = pickle.loads(pickle.dumps(vocab))
    assert clone == vocab
    assert clone is not vocab
    assert clone.keys() == vocab.keys()
    assert clone.phrase("highway", "foo_bar") == vocab.phrase("highway", "foo_bar")
    merged = vocab.merged({"highway=track": "farm track"})
    assert pickle.loads(pickle.dumps(merged)).phrase("highway", "track").singular == "farm track"
    phrase = vocab.phrase("landuse", "farmland")
    assert pickle.loads(pickle.dumps(phrase)) == phrase


def test_plural_verb_marks_mass_nouns_of_plural_form(vocab):
    assert vocab.phrase("waterway", "rapids").plural_verb
    assert not vocab.phrase("landuse", "farmland").plural_verb
    merged = vocab.merged({"class:lc=tree": {"singular": "trees", "mass": True, "plural_verb": True}})
    trees = merged.phrase("class:lc", "tree")
    assert trees.mass and trees.plural_verb and trees.plural == "trees"
    with pytest.raises(VocabularyError, match="'plural_verb' must be true or false"):
        vocab.merged({"natural=wood": {"singular": "woods", "plural_verb": "yes"}})
