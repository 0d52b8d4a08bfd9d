"""The degenerate-record checks: each with texts that must fail and texts that must pass, in
several languages, including the records the issue found in the quickstart's output."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.generator.settings import GeneratorSettings
from taxoforge import degenerate
from taxoforge.degenerate import (
    PromptSource,
    Thresholds,
    asks,
    copied_examples,
    echo,
    label_problem,
    mixed_language,
    near_identical,
    no_answer,
    not_a_request,
    prompt_leak,
    prompt_source,
    repetition,
    schema_wording,
    template_wording,
)
from taxoforge.prompts import load_template

_ROOT = Path(__file__).resolve().parents[3]
_IMPROVE = load_template(_ROOT / "services/generator/prompts/codeclm_improve.yaml")
_TAP = load_template(_ROOT / "services/generator/prompts/tap.yaml")
_ENCODE = load_template(_ROOT / "services/taxonomy/prompts/encode.yaml")
_SYLLABUS = load_template(_ROOT / "services/taxonomy/prompts/syllabus.yaml")

QUICKSTART_ECHO = "I'm ready to help with your homework question."


# ---- echo ----


@pytest.mark.parametrize(
    ("instruction", "response"),
    [
        (QUICKSTART_ECHO, QUICKSTART_ECHO),
        ("Explain why the sky is blue at noon.", "Explain why the sky is blue at noon!"),
        (
            "Expliquez pourquoi le ciel est bleu pendant la journée.",
            "« Expliquez pourquoi le ciel est bleu pendant la journée. »",
        ),
        (
            "Erklären Sie, warum der Himmel am Tag blau ist.",
            "Erklären Sie, warum der Himmel am Tag blau ist. Gut.",
        ),
        ("请解释为什么天空在白天是蓝色的。", "请解释为什么天空在白天是蓝色的"),
    ],
)
def test_a_response_that_restates_its_instruction_is_an_echo(
    instruction: str, response: str
) -> None:
    found = echo(instruction, response)

    assert found is not None
    assert found.reason == "echo"


@pytest.mark.parametrize(
    ("instruction", "response"),
    [
        ("What is the capital of France?", "The capital of France is Paris."),
        # An edit task's answer is the text corrected, without the request.
        (
            "Fix the typos in this paragraph: Teh cat sat on teh mat and looked at the brids.",
            "The cat sat on the mat and looked at the birds.",
        ),
        # Quoting the question, then answering it at length.
        (
            "Why is the sky blue?",
            "Why is the sky blue? Because air molecules scatter short blue wavelengths of "
            "sunlight far more than red ones, so blue light reaches us from every direction.",
        ),
        ("Quelle est la capitale de la France ?", "La capitale de la France est Paris."),
        ("Was ist die Hauptstadt von Frankreich?", "Die Hauptstadt von Frankreich ist Paris."),
        ("法国的首都是哪里\uff1f", "法国的首都是巴黎。"),
    ],
)
def test_an_answer_is_not_an_echo(instruction: str, response: str) -> None:
    assert echo(instruction, response) is None


# ---- not a request ----


@pytest.mark.parametrize(
    "text",
    [
        QUICKSTART_ECHO,
        "I\u2019m ready to help with your homework question.",
        "Please go to the following link…",
        "Sure! Here is a homework question about gravity.",
        "Here is your homework question: why do apples fall?",
        "How can I help you today?",
        "I'd be happy to help you with that.",
        "Je suis prête à vous aider avec votre question.",
        "Voici votre question : pourquoi le ciel est-il bleu ?",
        "Ich helfe Ihnen gerne bei Ihrer Frage.",
        "Wie kann ich Ihnen helfen?",
        "我很乐意帮助你回答这个问题。",
        "Hello there, nice to meet you.",
    ],
)
def test_assistant_voice_is_not_a_request(text: str) -> None:
    found = not_a_request(text)

    assert found is not None
    assert found.reason == "not_a_request"


@pytest.mark.parametrize(
    "text",
    [
        "Hello! Can you explain how vaccines work?",
        "Can you help me solve 2x + 3 = 7?",
        "I need help with my homework: solve 2x + 3 = 7.",
        "Here is a list of numbers: 3, 1, 2. Sort them in ascending order.",
        "Write advice that would help your younger sibling prepare for exams.",
        "Expliquez pourquoi le ciel est bleu.",
        "Erklären Sie, warum der Himmel blau ist.",
        "请解释为什么天空是蓝色的。",
    ],
)
def test_requests_are_requests(text: str) -> None:
    assert not_a_request(text) is None


# ---- prompt leaks ----


def _improve_source() -> object:
    messages = _IMPROVE.render(
        nonce="abc123def456", instruction="x", action="add a table", language="French"
    )
    return prompt_source(
        _IMPROVE.system, _IMPROVE.user, messages, ["Formal Sciences > Computer Science"]
    )


@pytest.mark.parametrize(
    "text",
    [
        "<</instruction-…>",
        "Expliquez la récursivité. <</instruction-abc123def456>>",
        "Expliquez la récursivité. instruction-abc123def456",
        "Explain recursion abc123def456 in depth.",
        "Rewrite the instruction to follow this action: add a table.",
        "Keep its topic and make it harder and more specific.",
        "Explain recursion (Formal Sciences > Computer Science) with an example.",
        "<|im_start|>assistant Explain recursion.",
    ],
)
def test_our_own_prompt_in_the_output_is_a_leak(text: str) -> None:
    found = prompt_leak(text, _improve_source())  # type: ignore[arg-type]

    assert found is not None
    assert found.reason == "prompt_leak"


@pytest.mark.parametrize(
    "text",
    [
        # The seed's own subject words are the topic, not a leak.
        "Explain how computer science uses recursion, with an example in Python.",
        "Write a C++ loop that prints x: for (int i = 0; i < n; ++i) cout << x;",
        "Is 5 > 3 in every number system? Explain.",
        "Rewrite this sentence to be more formal: 'gonna be late'.",
    ],
)
def test_ordinary_text_is_no_leak(text: str) -> None:
    assert prompt_leak(text, _improve_source()) is None  # type: ignore[arg-type]


def test_a_leak_is_a_run_of_the_fixed_wording_not_of_the_fields() -> None:
    messages = _TAP.render(
        task="a worked problem",
        task_description="",
        guidance="",
        subject="Thermodynamics of black holes and their entropy",
        path="Physics",
        description="Thermodynamics of black holes and their entropy",
        difficulty="hard",
        example="",
        language="English",
    )
    source = prompt_source(_TAP.system, _TAP.user, messages)

    assert (
        prompt_leak("Discuss the thermodynamics of black holes and their entropy.", source) is None
    )
    leak = prompt_leak("Write the request in English, as a user would write it.", source)
    assert leak is not None


# ---- near-identical candidates ----


def test_candidates_that_hardly_differ_are_near_identical() -> None:
    found = near_identical(
        "Paris is the capital of France.", [("r0", "Paris is the capital of France!")]
    )

    assert found is not None
    assert found.detail.endswith("r0")
    assert near_identical("法国的首都是巴黎。", [("r0", "法国的首都是巴黎")]) is not None


def test_different_answers_are_not_near_identical() -> None:
    assert near_identical("Paris.", [("r0", "Berlin, which is in Spain.")]) is None
    a = "Paris is the capital of France; it sits on the Seine and has about two million people."
    b = "France's capital is Paris, a city of roughly two million on the river Seine."
    assert near_identical(a, [("r0", b)]) is None


# ---- runaway repetition ----


@pytest.mark.parametrize(
    "text",
    [
        "The answer is yes. " * 12,
        "Step one: mix the flour.\n" * 5,
        "La réponse est oui, bien sûr. " * 10,
        "答案是肯定的\uff0c没有问题。" * 10,
        "Photosynthesis makes sugar. " + "and then and then and then " * 8,
    ],
)
def test_a_loop_is_runaway_repetition(text: str) -> None:
    found = repetition(text)

    assert found is not None
    assert found.reason == "repetition"


@pytest.mark.parametrize(
    "text",
    [
        "Photosynthesis converts light energy into chemical energy. It happens in chloroplasts, "
        "where chlorophyll absorbs light. The light reactions make ATP and NADPH, and the "
        "Calvin cycle uses them to fix carbon dioxide into sugars, releasing oxygen.",
        "1. Preheat the oven to 200 degrees.\n2. Mix the flour and the sugar.\n"
        "3. Add the eggs to the mixture.\n4. Bake the mixture for 20 minutes.\n",
        "```python\nprint(1)\nprint(1)\nprint(1)\nprint(1)\n```\nThis prints one four times.",
    ],
)
def test_ordinary_text_is_not_repetition(text: str) -> None:
    assert repetition(text) is None


# ---- mixed language ----


@pytest.mark.parametrize(
    ("language", "text"),
    [
        (
            "fr",
            "Expliquez la photosynthèse et le rôle de la lumière.\n"
            "Please answer in English and give two short examples of plants.",
        ),
        (
            "de",
            "Erklären Sie die Photosynthese. Describe how the light reactions work in the "
            "chloroplast membrane.",
        ),
        (
            "zh",
            "请解释光合作用中二氧化碳的作用。"
            "Explain the role of chlorophyll in the light reactions.",
        ),
        ("en", "Explain how photosynthesis works. 请解释光合作用中二氧化碳的作用并举例说明。"),
    ],
)
def test_a_whole_sentence_in_another_language_is_mixed(language: str, text: str) -> None:
    found = mixed_language(text, language)

    assert found is not None
    assert found.reason == "mixed_language"


@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("fr", "Le machine learning est un domaine de l'intelligence artificielle. Expliquez-le."),
        ("fr", "Traduisez en français : « The quick brown fox jumps over the lazy dog today. »"),
        ("de", "Das Machine Learning ist ein Teilgebiet der künstlichen Intelligenz."),
        ("zh", "请解释光合作用中二氧化碳的作用\uff0c并举出两个例子说明植物如何利用光能。"),
        ("en", "Explain why the sky is blue during the day and red at sunset, using scattering."),
        # Lists of nouns or names have no language's grammar, whatever the detector says.
        (
            "en",
            "Compare two ways to study the cell and say which you would choose. "
            "(morning village village letter garden letter d7931fe8)",
        ),
        ("en", "Name the rulers: Friedrich Wilhelm, Gustav Adolf, Maximilian, Ferdinand."),
        ("fr", "Écrivez une fonction : `def add(a, b): return a + b  # adds two numbers together`"),
    ],
)
def test_one_language_with_loanwords_quotes_or_code_is_not_mixed(language: str, text: str) -> None:
    assert mixed_language(text, language) is None


# ---- taxonomy labels ----


def _encode_wording() -> tuple[list[str], list[str]]:
    wording, _ = template_wording(_ENCODE.system, _ENCODE.user)
    return wording, ["use_case", "skills", "tags"]


@pytest.mark.parametrize(
    ("label", "data", "reason"),
    [
        # The quickstart's induced use case: the encode prompt's own field description.
        ("the one use case it serve as a short noun phrase", "Explain gravity.", "label_copied"),
        ("short noun phrases", "Explain gravity.", "label_copied"),
        ("Key Concepts: inertia", "", "label_malformed"),
        ("{force}", "", "label_malformed"),
        ("use_case", "", "label_malformed"),
        ("  ", "", "label_malformed"),
        ("---", "", "label_malformed"),
    ],
)
def test_copied_or_malformed_labels_are_found(label: str, data: str, reason: str) -> None:
    wording, names = _encode_wording()

    found = label_problem(label, wording, data, names)

    assert found is not None
    assert found.reason == reason


@pytest.mark.parametrize(
    ("label", "data"),
    [
        ("email writing", "Write an email to my boss asking for a raise."),
        ("debugging python code", "Fix this Python bug in my loop."),
        ("explaining a physics concept", "Explain why objects fall in physics."),
        ("inertia", ""),
        ("Newton's laws of motion", "Mechanics"),
        ("热力学", ""),
    ],
)
def test_real_labels_are_kept(label: str, data: str) -> None:
    wording, names = _encode_wording()

    assert label_problem(label, wording, data, names) is None


def test_a_reply_listing_the_prompts_examples_back_has_copied_them() -> None:
    wording, _ = _encode_wording()
    dump = ["email writing", "Debugging Python code", "optics"]

    assert copied_examples(dump, wording) == ["email writing", "Debugging Python code"]
    # One example alone may be the right label: a traceback question is debugging python code.
    assert copied_examples(["debugging python code", "tracebacks"], wording) == []
    assert (
        label_problem("debugging python code", wording, "Why does this traceback happen?") is None
    )


def test_a_key_concept_copied_from_the_syllabus_prompt_is_found() -> None:
    wording, _ = template_wording(_SYLLABUS.system, _SYLLABUS.user)

    found = label_problem("about five key concepts", wording, "Mechanics Physics")

    assert found is not None
    assert found.reason == "label_copied"


def test_schema_wording_lists_titles_descriptions_and_names() -> None:
    schema = {
        "title": "Reply",
        "description": "The reply.",
        "properties": {"use_case": {"title": "Use Case", "type": "string"}},
    }

    wording, names = schema_wording(schema)

    assert set(wording) == {"Reply", "The reply.", "Use Case"}
    assert names == ["use_case"]


# ---- thresholds ----


def test_the_generator_settings_default_to_the_tested_thresholds() -> None:
    assert GeneratorSettings().thresholds() == Thresholds()


def test_a_threshold_moves_its_line() -> None:
    a, b = "Paris is the capital city of France.", "Paris is the capital of France."

    assert near_identical(a, [("r0", b)], Thresholds(near_identical=0.9)) is not None
    assert near_identical(a, [("r0", b)], Thresholds(near_identical=0.99)) is None


# ---- responses that are only chatter ----


@pytest.mark.parametrize(
    "text",
    [QUICKSTART_ECHO, "Please go to the following link…", "Ich helfe Ihnen gerne bei Ihrer Frage."],
)
def test_a_short_offer_is_no_answer(text: str) -> None:
    found = no_answer(text)

    assert found is not None
    assert found.reason == "no_answer"


def test_an_answer_that_opens_with_sure_is_an_answer() -> None:
    text = (
        "Sure! Objects fall at the same rate in a vacuum because gravity gives every mass the "
        "same acceleration, about 9.8 metres per second squared near the Earth's surface, and "
        "without air there is no drag to slow the lighter one."
    )

    assert no_answer(text) is None


def test_the_prompts_field_values_as_lines_of_their_own_are_a_leak() -> None:
    # Seen on the embedded model: the brief copied as headings above the question.
    source = PromptSource(
        paths=("Formal Sciences > Mathematics",),
        labels=(
            "Math Word Problems",
            "Probability & Conditional Probability",
            "Bayes' Theorem",
            "Expected Value",
            "Code Generation",
        ),
    )
    leaked = (
        "Math Word Problems\nMathematics\nProbability & Conditional Probability, Bayes' "
        "Theorem, Expected Value\nA bakery sells 20 boxes of muffins; how many are left?"
    )
    found = prompt_leak(leaked, source)
    assert found is not None and "line of their own" in found.detail
    french = "Code Generation\nÉcrivez une fonction Python qui inverse une chaîne."
    assert prompt_leak(french, source) is not None
    # The same words inside a sentence are the subject, not a leak.
    fine = "Using Bayes' Theorem, what is the expected value of the second draw?"
    assert prompt_leak(fine, source) is None


def test_a_restatement_behind_a_short_preamble_is_an_echo() -> None:
    # Seen on the embedded model (an instruction with a stray line, then the reply).
    instruction = (
        "The concept of exponential growth is a fundamental idea that has numerous "
        "applications across various fields. This tutorial explores how to solve problems"
        " using this concept with calculus, which enables us to analyze complex economic "
        "models and model diseases like biology through the lens of economics and "
        "finance.\n\nRewrite instruction in English:"
    )
    response = (
        "Alright, alright! I'll make sure to keep it in the correct language.\n\nThe "
        "concept of exponential growth is a fundamental idea that has numerous "
        "applications across various fields. This tutorial explores how to solve problems"
        " using this concept with calculus, which enables us to analyze complex economic "
        "models and model diseases like biology through economics and finance."
    )
    assert echo(instruction, response) is not None
    answer = (
        "Exponential growth means a quantity grows by a fixed factor per period: "
        "N(t) = N0 * e^(rt). With calculus, dN/dt = rN, so the growth rate is proportional to "
        "the size, which is why populations and compound interest accelerate over time."
    )
    assert echo(instruction, answer) is None


@pytest.mark.parametrize(
    "text",
    [
        # Seen in make demo's output on the embedded model.
        "I'll provide the requested response in English, with no label. I can respond to any "
        "request that uses only English.",
        "Alright, there is no answer to this question.",
        "Okay! Here is the task.",
        "D'accord, voici la question.",
    ],
)
def test_an_assistant_talking_about_its_own_reply_is_not_a_request(text: str) -> None:
    assert not_a_request(text) is not None


@pytest.mark.parametrize(
    "text",
    [
        "I want you to solve the math word problems using fractions.",
        "I will give a talk next week; help me outline it.",
        "OK Google is a wake phrase; explain how wake words work?",
        "Okayama is a city in Japan. What is it known for?",
        "Alright is spelled how? Explain the difference between alright and all right.",
    ],
)
def test_a_user_speaking_of_themselves_still_asks(text: str) -> None:
    assert not_a_request(text) is None


# ---- a request asks for something ----

# Requests of the shapes instruction datasets hold (Alpaca, Dolly, chat logs), in the languages
# drafts are most often written in: each must read as a request.
_REAL_REQUESTS = [
    "Give three tips for staying healthy.",
    "What are the three primary colors",
    "Describe the structure of an atom.",
    "Pretend you are a project manager of a construction company. Describe a time when you "
    "had to make a difficult decision.",
    "Identify the odd one out. Twitter, Instagram, Telegram",
    "Explain why the following fraction is equivalent to 1/4: 4/16",
    "Evaluate this sentence for spelling and grammar mistakes: He finnished his meal",
    "How did Julius Caesar die",
    "Generate a list of ten items a person might need for a camping trip",
    "Classify the following into animals, plants, and minerals: Oak tree, copper ore, elephant",
    "Rewrite the following sentence using active voice. The news report was read by the captain.",
    "Tell me the meaning of the phrase 'to make a mountain out of a molehill'",
    "Who wrote Pride and Prejudice",
    "Given a list of numbers, find the maximum.",
    "In Python, write a function that reverses a string.",
    "Using the input, construct a sentence with a metaphor.",
    "For the following sentence, identify the subject. The dog barked at the mailman.",
    "Translate 'Good morning' into Spanish.",
    "Find the area of a circle with radius 5 cm.",
    "**Task:** Summarize the article below in two sentences.",
    "1. Name the largest planet in our solar system.",
    "Question 3: Which gas do plants absorb",
    "A train leaves at 9:00 and travels 120 km at 60 km/h. When does it arrive",
    "I have a CSV of customer reviews. I want to classify them by sentiment in pandas.",
    "I'm getting a KeyError when I read a missing key from a dict in Python.",
    "My manager asked for a status update. Draft a short email for me.",
    "What's the difference between a list and a tuple in Python",
    "Let's plan a three-day trip to Kyoto for a family with two children.",
    "Imagine you are a tour guide in Rome and welcome a group of students.",
    "Suppose a bag holds 3 red and 5 blue balls; compute the chance of drawing two reds.",
    "Be concise and list the steps to reset a router.",
    "Ich brauche ein Rezept für einen veganen Kuchen.",
    "Erklären Sie den Unterschied zwischen Wetter und Klima.",
    "Schreibe ein kurzes Gedicht über den Herbst.",
    "Nennen Sie drei Ursachen der Französischen Revolution.",
    "Wie funktioniert eine Wärmepumpe",
    "Rédigez un courriel pour annuler un rendez-vous.",
    "Explique la différence entre la météo et le climat.",
    "Pourquoi le ciel est-il bleu",
    "À partir du texte suivant, résumez les idées principales.",
    "Escribe un poema corto sobre el mar.",
    "Explique la diferencia entre clima y tiempo.",
    "Spiega la differenza tra meteo e clima.",
    "Escreva uma carta formal para o diretor da escola.",
    "请解释光合作用的过程。",
    "写一首关于秋天的短诗。",
    "光合作用的原理是什么",
    "日本の首都について説明してください。",
    "Rewrite these assembly instructions in plain English: insert tab A into slot B.",
    "Make this prompt for an image generator more specific: a cat on a sofa.",
    "Follow the instructions below and explain each step.",
]


@pytest.mark.parametrize("text", _REAL_REQUESTS)
def test_real_shaped_requests_are_requests(text: str) -> None:
    assert not_a_request(text) is None, not_a_request(text)


@pytest.mark.parametrize(
    "text",
    [
        # Seen in make demo's output on the embedded model: statements with no ask at all.
        "Ceux qui permettent à répéter ce quel que la question soit correcte pour le débat de "
        "ce qui est préférer, le bon français.",
        "In that one, as an example of using the given skills, easy.\nThis is the response to "
        "a question about providing explanation and purpose. It has all the requested details "
        "from the provided context and purpose in English.",
        "The topic of Linear Algebra in Mathematics, and how it is applied to a wide range of "
        "disciplines.",
        "Die Photosynthese ist ein Prozess, bei dem Pflanzen Licht in Energie umwandeln.",
    ],
)
def test_a_statement_with_no_ask_is_not_a_request(text: str) -> None:
    found = not_a_request(text)

    assert found is not None and "statement" in found.detail


@pytest.mark.parametrize(
    "text",
    [
        # Seen in make demo's output: the rewriter commenting on its own task, the model
        # presenting "your question".
        "To make the instruction more challenging and specific, I can request a question in "
        "English. You can write the entire response with a bold font like this.",
        "Your question:\nYou are asked to create a product that calculates how fast cells grow.",
        # The improve prompt's intent paraphrased (make demo, embedded model).
        "Provide explanation of context and purpose.\nQuestion: How could the instruction be "
        "reworked to make it more challenging?\nOutput: Explain in English, with a specific "
        "example. Rewrite the instruction in the language of\nmore complex. Write it in "
        "English. Reply only.",
        "Réécrivez la consigne pour la rendre plus difficile.",
        "The task of the text is to provide detailed comparison of two tables.\n\nHere's a "
        "rewritten version: Provide detailed comparison of two tables using multiple columns.",
    ],
)
def test_the_writer_speaking_of_its_prompt_is_not_a_request(text: str) -> None:
    found = not_a_request(text)

    assert found is not None and "prompt" in found.detail


def test_a_script_with_no_lexicon_is_not_judged_by_the_ask_rule() -> None:
    assert asks("Фотосинтез — это процесс превращения света в энергию.") is None
    assert not_a_request("Фотосинтез — это процесс превращения света в энергию.") is None


def test_an_offer_that_asks_for_input_is_no_answer_whatever_its_length() -> None:
    # Seen in make demo's output on the embedded model (54 tokens: longer than the short
    # chatter rule looks at).
    text = (
        "I'm ready to assist you with your question. Please provide the information about how "
        "I can evaluate the outcome of a decision using the selected option or alternative "
        "solution, without altering the original response.\n```python\n# Question: What is "
        "your role?\nYour answer will be in English, and it's not possible to edit my "
        "responses unless you have permission to do so."
    )
    found = no_answer(text)

    assert found is not None and "asks for input" in found.detail
    assert no_answer("Je suis prête à vous aider. Veuillez préciser le texte à résumer.")


def test_an_answer_that_offers_more_at_its_end_is_an_answer() -> None:
    text = (
        "Sure! Water boils at 100 °C at sea level because its vapour pressure then equals the "
        "air pressure. At altitude the air pressure is lower, so it boils at a lower "
        "temperature, about 90 °C at 3,000 m.\n\nIf you would like more detail, please let me "
        "know and I'd be happy to help with the calculation."
    )

    assert no_answer(text) is None
    assert no_answer("The capital of France is Paris.") is None


def test_remembered_tokens_are_a_new_list_each_time() -> None:
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in "FULLWIDTH")  # NFKC folds these
    text = f"Naïve café owners' {fullwidth} text: 東京 two-words"
    first = degenerate.tokens(text)
    assert first == ["naïve", "café", "owners", "fullwidth", "text", "東", "京", "two", "words"]
    first.append("changed")  # a caller's list is its own: the remembered tokens stay
    assert degenerate.tokens(text) == first[:-1]
    assert degenerate.tokens(text) is not degenerate.tokens(text)
