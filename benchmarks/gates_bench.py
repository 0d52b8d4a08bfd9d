"""Microseconds of CPU per quality-gate check on prose of real length.

The pipeline benchmark's fake model writes ~30-word replies; real answers run 50-400 words, and
the gates' cost grows with the text. This times each check the generator runs on a draft
(``check_draft``), an instruction (``check_instruction``) and a response (``check_response``,
with its parts) on a few hand-written answers in English and French of 60 to 330 words.

    .venv/bin/python benchmarks/gates_bench.py [--repeat 300]
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

from services.generator import gates
from taxoforge import degenerate, langid

SYSTEM = (
    "You are a knowledgeable, careful assistant. Answer accurately and completely, in ${language}."
)
USER = "${instruction}"

SAMPLES: list[tuple[str, str, str]] = [
    (
        "en",
        "Explain how photosynthesis converts light energy into chemical energy, and describe "
        "the role of chlorophyll in this process. Use an example from a common plant.",
        "Photosynthesis is the process by which green plants, algae and some bacteria turn "
        "light energy into chemical energy stored in sugar. It takes place mainly in the "
        "chloroplasts of leaf cells. Chlorophyll, the green pigment in the thylakoid membranes, "
        "absorbs red and blue light and reflects green light, which is why leaves look green. "
        "When chlorophyll absorbs a photon, one of its electrons is raised to a higher energy "
        "level. This excited electron is passed along an electron transport chain, and the "
        "energy released is used to pump protons and to make ATP. Water molecules are split to "
        "replace the lost electrons, releasing oxygen as a by-product. The ATP and NADPH made "
        "in these light-dependent reactions then power the Calvin cycle, where carbon dioxide "
        "from the air is fixed into three-carbon sugars that the plant uses to build glucose, "
        "starch and cellulose.\n\nFor example, in a sunflower, the broad leaves face the sun to "
        "capture as much light as possible. During a sunny day the leaves produce glucose, part "
        "of which is stored as starch and used at night for growth. Without chlorophyll, the "
        "plant could not capture light energy, and the whole chain of reactions would stop. In "
        "short, chlorophyll is the molecule that starts photosynthesis by turning light into a "
        "flow of energized electrons.",
    ),
    (
        "en",
        "What is the difference between a list and a tuple in Python? When should I use each?",
        "Both lists and tuples are ordered sequences, but a list is mutable and a tuple is not. "
        "You can append to a list, remove items from it or change an element in place; a tuple "
        "keeps the items it was created with. Because a tuple cannot change, it can be used as "
        "a dictionary key or stored in a set when all of its items are hashable.\n\n"
        "Use a list for a collection that grows or changes, such as the lines you read from a "
        "file. Use a tuple for a fixed group of values that belong together, such as a point's "
        "coordinates or a row returned by a database query.",
    ),
    (
        "fr",
        "Expliquez pourquoi les saisons existent sur la Terre et ce qui se passe aux équinoxes.",
        "Les saisons existent parce que l'axe de rotation de la Terre est incliné d'environ "
        "23,4 degrés par rapport au plan de son orbite autour du Soleil. Pendant une partie de "
        "l'année, l'hémisphère nord est tourné vers le Soleil : les rayons y arrivent plus "
        "verticalement et les journées sont plus longues, c'est l'été. Six mois plus tard, "
        "c'est l'hémisphère sud qui reçoit le plus de lumière, et le nord connaît l'hiver. La "
        "distance entre la Terre et le Soleil varie un peu au cours de l'année, mais ce n'est "
        "pas la cause des saisons : la Terre est même la plus proche du Soleil en janvier.\n\n"
        "Aux équinoxes, vers le 20 mars et le 22 septembre, l'axe n'est incliné ni vers le "
        "Soleil ni à l'opposé. Le Soleil se trouve alors à la verticale de l'équateur, et la "
        "durée du jour est à peu près égale à celle de la nuit partout sur la planète. Ces "
        "dates marquent le début du printemps et de l'automne.",
    ),
]


def _time(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm: compiled patterns, the language detector, the token cache
    return timeit.timeit(fn, number=repeat) / repeat * 1e6


def _checks(language: str, instruction: str, answer: str) -> list[tuple[str, Callable[[], object]]]:
    """The generator's checks of one sample, each as a call to time."""
    messages = [
        {"role": "system", "content": SYSTEM.replace("${language}", language)},
        {"role": "user", "content": instruction},
    ]
    source = degenerate.prompt_source(SYSTEM, USER, messages)
    written = gates.Written(source=source, language=language, check_lang=True)
    t = degenerate.DEFAULT
    return [
        ("check_draft(response)", lambda: gates.check_draft(answer, "stop", language, True)),
        ("check_response", lambda: gates.check_response(instruction, answer, written)),
        ("  no_answer", lambda: degenerate.no_answer(answer)),
        ("  prompt_leak", lambda: degenerate.prompt_leak(answer, source, t)),
        ("  repetition", lambda: degenerate.repetition(answer, t)),
        ("  mixed_language", lambda: degenerate.mixed_language(answer, language, t)),
        (
            "check_draft(instruction)",
            lambda: gates.check_draft(instruction, "stop", language, True),
        ),
        ("check_instruction", lambda: gates.check_instruction(instruction, written)),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=300, help="calls timed per check")
    args = parser.parse_args(argv)
    langid.check_language("warm up the detector", "en")
    print(f"{'text':10s} {'words':>5s}  {'check':28s} {'us/call':>8s}")
    for language, instruction, answer in SAMPLES:
        words = len(answer.split())
        for name, fn in _checks(language, instruction, answer):
            print(f"{language:10s} {words:5d}  {name:28s} {_time(fn, args.repeat):8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
