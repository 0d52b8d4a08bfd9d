"""Taxonomy files: parsing, validation messages, leaves, and the catalog."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from services.taxonomy.catalog import (
    BUILTIN_DIR,
    Catalog,
    TaxonomyFileError,
    iter_leaves,
    parse_taxonomy,
)
from taxoforge.errors import NotFoundError, PermanentError

VALID = textwrap.dedent(
    """\
    id: tiny
    version: "2"
    title: Tiny taxonomy
    description: Two fields, three leaves.
    nodes:
      - id: science
        title: Science
        kind: field
        children:
          - id: physics
            title: Physics
            description: Forces and motion.
            weight: 2
          - id: chemistry
            title: Chemistry
      - id: art
        title: Art
    """
)


def _doc(nodes: str, header: str = "id: t\n") -> str:
    return header + "nodes:\n" + textwrap.indent(textwrap.dedent(nodes), "  ")


def test_parse_valid_file_builds_the_tree() -> None:
    tax = parse_taxonomy(VALID, source="tiny.yaml")

    assert tax.id == "tiny"
    assert tax.title == "Tiny taxonomy"
    assert tax.description == "Two fields, three leaves."
    assert tax.version.startswith("2+")
    assert [n.id for n in tax.root.children] == ["science", "art"]
    science = tax.root.children[0]
    assert science.kind == "field"
    assert [c.id for c in science.children] == ["physics", "chemistry"]
    physics = science.children[0]
    assert physics.weight == 2.0
    assert physics.description == "Forces and motion."
    # weight defaults to 1
    assert science.children[1].weight == 1.0
    assert tax.root.children[1].weight == 1.0


def test_parse_accepts_json() -> None:
    tax = parse_taxonomy('{"id": "j", "nodes": [{"id": "a", "title": "A"}]}')

    assert tax.id == "j"
    assert [n.id for n in tax.root.children] == ["a"]
    # no version given: "0" plus the digest
    assert tax.version.startswith("0+")


def test_title_defaults_to_the_id() -> None:
    tax = parse_taxonomy(_doc("- id: a\n  title: A\n"))

    assert tax.title == "t"


def test_version_digest_changes_with_the_file_content() -> None:
    same = parse_taxonomy(VALID)
    again = parse_taxonomy(VALID)
    edited = parse_taxonomy(VALID.replace("Forces and motion.", "Forces, motion, energy."))

    assert same.version == again.version
    assert edited.version != same.version
    # the declared version stays the part before the digest
    assert edited.version.split("+")[0] == same.version.split("+")[0] == "2"
    assert len(same.version.split("+")[1]) == 10


def test_builtin_starter_has_fifteen_leaves() -> None:
    text = (BUILTIN_DIR / "starter.yaml").read_text(encoding="utf-8")
    tax = parse_taxonomy(text, source="starter.yaml")

    leaves = list(iter_leaves(tax.root))
    assert tax.id == "starter"
    assert len(leaves) == 15
    assert len({leaf.id for leaf, _ in leaves}) == 15
    paths = {leaf.id: path for leaf, path in leaves}
    assert paths["physics"] == ("Natural Sciences", "Physics")


def test_iter_leaves_yields_title_paths_at_every_depth() -> None:
    tax = parse_taxonomy(VALID)

    got = [(leaf.id, path) for leaf, path in iter_leaves(tax.root)]

    assert got == [
        ("physics", ("Science", "Physics")),
        ("chemistry", ("Science", "Chemistry")),
        ("art", ("Art",)),
    ]


def test_duplicate_id_names_the_node() -> None:
    text = _doc(
        """\
        - id: a
          title: A
          children:
            - id: b
              title: B
        - id: b
          title: Again B
        """
    )

    with pytest.raises(TaxonomyFileError, match=r"f\.yaml: nodes\[1\] \(b\): id 'b' is used twice"):
        parse_taxonomy(text, source="f.yaml")


def test_bad_node_slug_is_rejected() -> None:
    with pytest.raises(TaxonomyFileError, match=r"nodes\[0\] \(Bad_Slug\): id must be a lowercase"):
        parse_taxonomy(_doc("- id: Bad_Slug\n  title: A\n"))


def test_missing_node_id_is_reported() -> None:
    with pytest.raises(TaxonomyFileError, match=r"nodes\[0\] \(no id\): id must be a lowercase"):
        parse_taxonomy(_doc("- title: A\n"))


def test_bad_taxonomy_id_is_rejected() -> None:
    with pytest.raises(TaxonomyFileError, match=r"f\.yaml: id 'Big Tax' must be a lowercase slug"):
        parse_taxonomy(_doc("- id: a\n  title: A\n", header="id: Big Tax\n"), source="f.yaml")


def test_missing_title_names_the_nested_node() -> None:
    text = _doc(
        """\
        - id: a
          title: A
          children:
            - id: b
        """
    )

    with pytest.raises(
        TaxonomyFileError, match=r"nodes\[0\] \(a\) > children\[0\] \(b\): title is missing"
    ):
        parse_taxonomy(text)


def test_blank_title_counts_as_missing() -> None:
    with pytest.raises(TaxonomyFileError, match=r"\(a\): title is missing"):
        parse_taxonomy(_doc("- id: a\n  title: '   '\n"))


@pytest.mark.parametrize("weight", ["0", "-1", "-0.5", ".nan"])
def test_weight_must_be_positive(weight: str) -> None:
    with pytest.raises(TaxonomyFileError, match=r"\(a\): weight must be > 0"):
        parse_taxonomy(_doc(f"- id: a\n  title: A\n  weight: {weight}\n"))


def test_weight_must_be_a_number() -> None:
    with pytest.raises(TaxonomyFileError, match=r"\(a\): weight must be a number"):
        parse_taxonomy(_doc("- id: a\n  title: A\n  weight: heavy\n"))


def test_unknown_key_is_named_with_the_allowed_ones() -> None:
    with pytest.raises(TaxonomyFileError, match=r"\(a\): unknown keys \['colour'\]; allowed: "):
        parse_taxonomy(_doc("- id: a\n  title: A\n  colour: red\n"))


@pytest.mark.parametrize(
    "nodes",
    ["nodes:\n  a: 1\n", "nodes: []\n", "nodes: just text\n", ""],
    ids=["mapping", "empty", "string", "absent"],
)
def test_nodes_must_be_a_non_empty_list(nodes: str) -> None:
    with pytest.raises(TaxonomyFileError, match="'nodes' must be a non-empty list"):
        parse_taxonomy("id: t\n" + nodes)


def test_children_must_be_a_list() -> None:
    with pytest.raises(TaxonomyFileError, match=r"\(a\): children must be a list"):
        parse_taxonomy(_doc("- id: a\n  title: A\n  children: oops\n"))


def test_a_node_must_be_a_mapping() -> None:
    with pytest.raises(TaxonomyFileError, match=r"nodes\[0\]: a node must be a mapping"):
        parse_taxonomy(_doc("- just-a-string\n"))


def test_invalid_yaml_is_reported_with_the_source() -> None:
    with pytest.raises(TaxonomyFileError, match=r"^broken\.yaml: not valid YAML"):
        parse_taxonomy("id: t\nnodes: [\n", source="broken.yaml")


def test_document_must_be_a_mapping() -> None:
    with pytest.raises(TaxonomyFileError, match="expected a mapping with id, title and nodes"):
        parse_taxonomy("- a\n- b\n")


def test_file_errors_are_permanent() -> None:
    assert issubclass(TaxonomyFileError, PermanentError)


def test_catalog_serves_builtin_and_extra_taxonomies(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(VALID, encoding="utf-8")

    catalog = Catalog(extra_dir=tmp_path)

    assert [t.id for t in catalog.all()] == ["starter", "tiny"]
    assert catalog.get("tiny").title == "Tiny taxonomy"
    assert catalog.get("starter").id == "starter"


def test_catalog_get_unknown_lists_known_ids(tmp_path: Path) -> None:
    (tmp_path / "tiny.yml").write_text(VALID, encoding="utf-8")
    catalog = Catalog(extra_dir=tmp_path)

    with pytest.raises(
        NotFoundError, match=r"taxonomy 'nope' does not exist; known: starter, tiny"
    ):
        catalog.get("nope")


def test_catalog_refuses_a_broken_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(_doc("- id: a\n"), encoding="utf-8")

    with pytest.raises(TaxonomyFileError, match=r"^bad\.yaml: nodes\[0\] \(a\): title is missing"):
        Catalog(extra_dir=tmp_path)


def test_catalog_version_follows_file_edits(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(VALID, encoding="utf-8")
    before = Catalog(extra_dir=tmp_path).get("tiny").version

    path.write_text(VALID.replace("title: Art", "title: Fine Art"), encoding="utf-8")
    after = Catalog(extra_dir=tmp_path).get("tiny").version

    assert before != after
    assert before.startswith("2+")
    assert after.startswith("2+")


def test_infinite_weight_is_rejected() -> None:
    with pytest.raises(TaxonomyFileError, match=r"\(a\): weight"):
        parse_taxonomy(_doc("- id: a\n  title: A\n  weight: .inf\n"))
