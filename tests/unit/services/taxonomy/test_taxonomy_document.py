"""Taxonomy documents: parsing, validation messages, dumping back, and the built-in files."""

from __future__ import annotations

import json
import textwrap

import pytest

from services.taxonomy.document import TaxonomyFileError, dump_taxonomy, parse_taxonomy
from services.taxonomy.settings import BUILTIN_DIR
from services.taxonomy.tree import digest, planning_leaves, walk
from taxoforge.errors import PermanentError
from taxoforge.v1 import common_pb2 as pb

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
            attributes:
              key_concepts: [Newton's laws, energy]
              guidance: Prefer worked examples.
          - id: chemistry
            title: Chemistry
            status: proposed
      - id: art
        title: Art
    """
)


def _doc(nodes: str, header: str = "id: t\n") -> str:
    return header + "nodes:\n" + textwrap.indent(textwrap.dedent(nodes), "  ")


def _error(text: str, source: str = "f.yaml") -> str:
    with pytest.raises(TaxonomyFileError) as caught:
        parse_taxonomy(text, source=source)
    return str(caught.value)


def _builtin(name: str) -> pb.Taxonomy:
    return parse_taxonomy((BUILTIN_DIR / f"{name}.yaml").read_text(encoding="utf-8"), name)


# ---- a valid document ----


def test_parse_valid_file_builds_the_tree() -> None:
    tax = parse_taxonomy(VALID, source="tiny.yaml")

    assert tax.id == "tiny"
    assert tax.title == "Tiny taxonomy"
    assert tax.description == "Two fields, three leaves."
    assert tax.root.id == "tiny"
    assert tax.root.kind == "root"
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


def test_every_parsed_node_comes_from_the_file() -> None:
    tax = parse_taxonomy(VALID)

    assert tax.root.origin == "file"
    assert {loc.node.origin for loc in walk(tax.root)} == {"file"}


def test_attributes_are_texts_or_lists_of_texts() -> None:
    physics = parse_taxonomy(VALID).root.children[0].children[0]

    assert list(physics.attributes["key_concepts"].items) == ["Newton's laws", "energy"]
    assert physics.attributes["key_concepts"].text == ""
    assert physics.attributes["guidance"].text == "Prefer worked examples."
    assert list(physics.attributes["guidance"].items) == []


def test_status_proposed_is_read_and_accepted_is_the_default() -> None:
    science = parse_taxonomy(VALID).root.children[0]

    assert science.status == pb.NODE_STATUS_ACCEPTED
    assert science.children[0].status == pb.NODE_STATUS_ACCEPTED
    assert science.children[1].status == pb.NODE_STATUS_PROPOSED


def test_explicit_status_accepted_is_allowed() -> None:
    tax = parse_taxonomy(_doc("- id: a\n  title: A\n  status: accepted\n"))

    assert tax.root.children[0].status == pb.NODE_STATUS_ACCEPTED


def test_parse_accepts_json() -> None:
    doc = {"id": "j", "nodes": [{"id": "a", "title": "A", "attributes": {"tags": ["x", "y"]}}]}

    tax = parse_taxonomy(json.dumps(doc))

    assert tax.id == "j"
    assert [n.id for n in tax.root.children] == ["a"]
    assert list(tax.root.children[0].attributes["tags"].items) == ["x", "y"]


def test_title_defaults_to_the_id() -> None:
    tax = parse_taxonomy(_doc("- id: a\n  title: A\n"))

    assert tax.title == "t"
    assert tax.root.title == "t"


def test_titles_are_stripped_and_kept_as_text() -> None:
    tax = parse_taxonomy(_doc("- id: a\n  title: '  Spaced  '\n- id: b\n  title: 2024\n"))

    assert [c.title for c in tax.root.children] == ["Spaced", "2024"]


def test_the_change_names_the_source_and_the_version_label() -> None:
    assert parse_taxonomy(VALID, source="tiny.yaml").change == "imported from tiny.yaml (version 2)"
    assert parse_taxonomy(_doc("- id: a\n  title: A\n"), "x.yaml").change == "imported from x.yaml"


def test_digest_is_the_digest_of_the_root() -> None:
    tax = parse_taxonomy(VALID)

    assert tax.digest == digest(tax.root)
    assert len(tax.digest) == 64


def test_digest_changes_with_the_content_and_only_with_it() -> None:
    same = parse_taxonomy(VALID)
    again = parse_taxonomy(VALID, source="elsewhere.yaml")
    edited = parse_taxonomy(VALID.replace("Forces and motion.", "Forces, motion, energy."))
    reweighted = parse_taxonomy(VALID.replace("weight: 2", "weight: 3"))

    assert same.digest == again.digest
    assert edited.digest != same.digest
    assert reweighted.digest != same.digest
    assert edited.digest != reweighted.digest


def test_file_errors_are_permanent() -> None:
    assert issubclass(TaxonomyFileError, PermanentError)


# ---- errors: "<source>:<line>: <where>: <problem>" ----


def test_bad_node_slug_is_rejected_with_line_and_path() -> None:
    text = _doc("- id: a\n  title: A\n- id: Bad_Slug\n  title: B\n")

    message = _error(text)

    assert message.startswith("f.yaml:5: nodes[1] (Bad_Slug): id must be a lowercase slug")


@pytest.mark.parametrize("node_id", ["-leading", "has space", "UPPER", "a" * 64, "dot.ted"])
def test_slugs_that_are_refused(node_id: str) -> None:
    message = _error(_doc(f"- id: '{node_id}'\n  title: A\n"))

    assert "id must be a lowercase slug" in message


def test_a_slug_of_63_characters_is_allowed() -> None:
    tax = parse_taxonomy(_doc(f"- id: {'a' * 63}\n  title: A\n"))

    assert tax.root.children[0].id == "a" * 63


def test_missing_node_id_is_reported() -> None:
    assert _error(_doc("- title: A\n")).startswith(
        "f.yaml:3: nodes[0] (no id): id must be a lowercase"
    )


def test_duplicate_id_names_the_node_and_the_first_use() -> None:
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

    message = _error(text)

    assert message == "f.yaml:8: nodes[1] (b): id 'b' is already used on line 6"


def test_a_node_cannot_reuse_the_taxonomy_id() -> None:
    message = _error(_doc("- id: t\n  title: T\n"))

    assert message.startswith("f.yaml:3: nodes[0] (t): id 't' is already used")


def test_reusing_the_taxonomy_id_names_the_line_of_the_taxonomy_id() -> None:
    text = "# A comment first.\n\nid: t\nnodes:\n  - id: t\n    title: T\n"

    assert _error(text) == "f.yaml:5: nodes[0] (t): id 't' is already used on line 3"


def test_bad_taxonomy_id_is_rejected() -> None:
    message = _error(_doc("- id: a\n  title: A\n", header="id: Big Tax\n"))

    assert message.startswith("f.yaml:1: id: 'Big Tax' must be a lowercase slug")


def test_missing_taxonomy_id_is_rejected() -> None:
    assert "id: '' must be a lowercase slug" in _error("nodes:\n  - id: a\n    title: A\n")


def test_missing_title_names_the_nested_node() -> None:
    text = _doc(
        """\
        - id: a
          title: A
          children:
            - id: b
        """
    )

    assert _error(text) == "f.yaml:6: nodes[0] (a) > children[0] (b): title is missing"


def test_blank_title_counts_as_missing() -> None:
    assert _error(_doc("- id: a\n  title: '   '\n")).endswith("(a): title is missing")


@pytest.mark.parametrize(
    "text",
    [
        "id: t\nnodes:\n  - id: a\n    title: null\n",
        "id: t\nnodes:\n  - id: a\n    title: ~\n",
        '{"id": "t", "nodes": [{"id": "a", "title": null}]}',
    ],
    ids=["null", "tilde", "json-null"],
)
def test_a_null_title_counts_as_missing(text: str) -> None:
    assert "title is missing" in _error(text)


@pytest.mark.parametrize("weight", ["0", "-1", "-0.5", "0.0", "inf", "1e999", "nan"])
def test_weight_must_be_positive_and_finite(weight: str) -> None:
    message = _error(_doc(f"- id: a\n  title: A\n  weight: {weight}\n"))

    assert message == (
        "f.yaml:5: nodes[0] (a): weight must be > 0 (prune the node instead of zeroing it)"
    )


@pytest.mark.parametrize("weight", ["heavy", ".inf", ".nan", "[1]"])
def test_weight_must_be_a_number(weight: str) -> None:
    message = _error(_doc(f"- id: a\n  title: A\n  weight: {weight}\n"))

    assert message.startswith("f.yaml:5: nodes[0] (a): ")
    assert "weight must be a number" in message or "expected a text" in message


def test_a_non_numeric_weight_names_the_weight() -> None:
    assert "weight" in _error(_doc("- id: a\n  title: A\n  weight: heavy\n"))


def test_unknown_key_is_named_with_the_allowed_ones() -> None:
    message = _error(_doc("- id: a\n  title: A\n  colour: red\n"))

    assert message.startswith("f.yaml:5: nodes[0] (a): unknown key 'colour'; allowed: ")
    for key in ("attributes", "children", "description", "kind", "status", "title", "weight"):
        assert key in message


def test_unknown_top_level_key_is_named() -> None:
    message = _error("id: t\ncolour: red\nnodes:\n  - id: a\n    title: A\n")

    assert message.startswith("f.yaml:2: document: unknown key 'colour'; allowed: ")


def test_a_key_given_twice_is_refused() -> None:
    message = _error(_doc("- id: a\n  title: A\n  title: B\n"))

    assert message == "f.yaml:5: nodes[0]: key 'title' appears twice"


def test_status_must_be_accepted_or_proposed() -> None:
    message = _error(_doc("- id: a\n  title: A\n  status: maybe\n"))

    assert message == "f.yaml:5: nodes[0] (a): status must be accepted or proposed"


@pytest.mark.parametrize(
    "nodes",
    ["nodes:\n  a: 1\n", "nodes: []\n", "nodes: just text\n", ""],
    ids=["mapping", "empty", "string", "absent"],
)
def test_nodes_must_be_a_non_empty_list(nodes: str) -> None:
    message = _error("id: t\n" + nodes)

    assert message.startswith("f.yaml:")
    assert message.endswith("nodes: must be a non-empty list of nodes")


@pytest.mark.parametrize("children", ["oops", "{a: 1}"], ids=["text", "mapping"])
def test_children_must_be_a_list(children: str) -> None:
    message = _error(_doc(f"- id: a\n  title: A\n  children: {children}\n"))

    assert message == "f.yaml:5: nodes[0] (a): children must be a list"


def test_an_attribute_must_be_a_text_or_a_list() -> None:
    text = _doc("- id: a\n  title: A\n  attributes:\n    extra: {x: 1}\n")

    message = _error(text)

    assert message == (
        "f.yaml:6: nodes[0] (a) attribute extra: an attribute is a text or a list of texts"
    )


def test_an_attribute_list_holds_texts_only() -> None:
    message = _error(_doc("- id: a\n  title: A\n  attributes:\n    extra: [[1, 2]]\n"))

    assert message == "f.yaml:6: nodes[0] (a) attribute extra: expected a text"


def test_attributes_must_be_a_mapping() -> None:
    message = _error(_doc("- id: a\n  title: A\n  attributes: [x]\n"))

    assert message.startswith("f.yaml:5: nodes[0] (a) attributes: expected a mapping")


def test_a_node_must_be_a_mapping() -> None:
    assert _error(_doc("- just-a-string\n")).startswith("f.yaml:3: nodes[0]: expected a mapping")


def test_document_must_be_a_mapping() -> None:
    assert _error("- a\n- b\n").startswith("f.yaml:1: document: expected a mapping")


def test_invalid_yaml_is_reported_with_the_source_and_the_line() -> None:
    message = _error("id: t\nnodes: [\n", source="broken.yaml")

    assert message.startswith("broken.yaml:3: not valid YAML")


@pytest.mark.parametrize(
    "text", ["", "   \n", "# only a comment\n"], ids=["empty", "blank", "comment"]
)
def test_an_empty_document_is_refused(text: str) -> None:
    assert _error(text, source="e.yaml") == "e.yaml: the document is empty"


# ---- dump_taxonomy ----


def _roundtrip(tax: pb.Taxonomy) -> pb.Taxonomy:
    return parse_taxonomy(dump_taxonomy(tax), source="dumped.yaml")


def test_dump_reads_back_to_the_same_tree() -> None:
    tax = parse_taxonomy(VALID)

    again = _roundtrip(tax)

    assert again.root == tax.root
    assert again.digest == tax.digest
    assert (again.id, again.title, again.description) == (tax.id, tax.title, tax.description)


def test_dump_round_trips_awkward_values() -> None:
    text = _doc(
        """\
        - id: a
          title: "2024"
          description: |
            line one
            line two
          weight: 0.1
          status: proposed
          attributes:
            padded: "  spaced  "
            empty: ""
            mixed: [x, "y, z", "123", "true", "null: no"]
          children:
            - id: b
              title: "yes"
              kind: session
              weight: 1e-7
        """,
        header="id: t\ntitle: 'Quoted: title'\ndescription: \"Unicode: caf\\u00e9 \\u2013 ok\"\n",
    )
    tax = parse_taxonomy(text)

    again = _roundtrip(tax)

    assert again.root == tax.root
    assert again.digest == tax.digest
    assert again.description == "Unicode: caf\u00e9 \u2013 ok"


def test_dump_leaves_out_defaults() -> None:
    dumped = dump_taxonomy(parse_taxonomy(_doc("- id: a\n  title: A\n")))

    assert "weight" not in dumped
    assert "status" not in dumped
    assert "attributes" not in dumped
    assert "children" not in dumped


def test_dump_writes_the_taxonomy_version() -> None:
    tax = parse_taxonomy(VALID)
    tax.version = "7"

    assert "version: '7'" in dump_taxonomy(tax)
    assert _roundtrip(tax).change == "imported from dumped.yaml (version 7)"


@pytest.mark.parametrize("name", ["starter", "knowledge", "tasks"])
def test_builtin_files_round_trip(name: str) -> None:
    tax = _builtin(name)

    again = _roundtrip(tax)

    assert again.root == tax.root
    assert again.digest == tax.digest


# ---- the built-in files ----


@pytest.mark.parametrize("name", ["starter", "knowledge", "tasks"])
def test_builtin_files_parse_with_unique_ids(name: str) -> None:
    tax = _builtin(name)

    ids = [tax.root.id, *(loc.node.id for loc in walk(tax.root))]
    assert tax.id == name
    assert len(ids) == len(set(ids))
    assert all(loc.node.status == pb.NODE_STATUS_ACCEPTED for loc in walk(tax.root))
    assert all(loc.node.title for loc in walk(tax.root))


def test_builtin_starter_has_fifteen_leaves() -> None:
    leaves = planning_leaves(_builtin("starter").root)

    assert len(leaves) == 15
    assert len({leaf.id for leaf, _ in leaves}) == 15
    paths = {leaf.id: path for leaf, path in leaves}
    assert paths["physics"] == ("Natural Sciences", "Physics")


def test_builtin_knowledge_leaves_all_have_key_concepts() -> None:
    leaves = planning_leaves(_builtin("knowledge").root)

    assert len(leaves) >= 90
    for leaf, path in leaves:
        assert len(path) == 3, leaf.id
        assert leaf.kind == "discipline", leaf.id
        assert leaf.description, leaf.id
        concepts = list(leaf.attributes["key_concepts"].items)
        assert len(concepts) >= 3, leaf.id
        assert all(c.strip() for c in concepts), leaf.id


def test_builtin_tasks_have_guidance_and_an_example() -> None:
    leaves = planning_leaves(_builtin("tasks").root)

    assert len(leaves) >= 20
    for leaf, _ in leaves:
        assert leaf.kind == "task_type", leaf.id
        assert leaf.description, leaf.id
        assert leaf.attributes["guidance"].text.strip(), leaf.id
        assert leaf.attributes["example"].text.strip(), leaf.id


@pytest.mark.parametrize(
    ("document", "where"),
    [
        ('{"id": "s", "title": "\\ud800", "nodes": [{"id": "a", "title": "A"}]}', "1: title"),
        ('id: s\nnodes:\n  - id: a\n    title: "x \\udc00"\n', "4: nodes[0] (a)"),
        ('id: s\nnodes:\n  - id: a\n    title: A\n    description: "\\ud83d"\n', "5: nodes[0]"),
        ('id: s\nnodes:\n  - id: a\n    title: A\n    attributes: {k: "\\ud800"}\n', "5:"),
        ('id: s\nnodes:\n  - id: a\n    title: A\n    attributes: {"\\ud800": x}\n', "5:"),
        ('id: s\nnodes:\n  - id: a\n    title: A\n    attributes: {k: ["\\ud800"]}\n', "5:"),
    ],
)
def test_a_lone_surrogate_anywhere_is_refused_with_its_line(document: str, where: str) -> None:
    with pytest.raises(TaxonomyFileError, match="lone surrogate") as err:
        parse_taxonomy(document)
    assert f"<taxonomy>:{where}" in str(err.value)


def test_an_escaped_surrogate_pair_is_one_character() -> None:
    document = '{"id": "s", "nodes": [{"id": "a", "title": "Emoji \\ud83d\\ude00"}]}'
    node = parse_taxonomy(document).root.children[0]
    assert node.title == "Emoji \N{GRINNING FACE}"
    assert node.SerializeToString()  # it can be stored
