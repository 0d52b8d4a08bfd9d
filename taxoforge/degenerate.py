"""Checks that stop degenerate model output before anyone scores it, whatever the model.

Pure functions over text, shared by the generator (instructions and responses) and the taxonomy
service (labels from induction and expansion). Each check returns a ``Finding`` (a named reason
and a detail a user can read) or None. The rules are general, not tuned to one model:

- ``echo``: a response that restates its instruction (near-identical, or the instruction
  nearly whole, opening and close, in an answer not much longer than it);
- ``not_a_request``: an instruction in the assistant's voice (an offer to help, an answer's
  preamble, a greeting with no task), one that only points at a link or comments on our
  prompt, or a statement that asks for nothing (no question, imperative or ask, ``asks``);
- ``prompt_leak``: our own prompt in the output: delimiter markers, the job's per-prompt
  markers, a long run of a template's fixed wording, the taxonomy path the prompt gave;
- ``no_answer``: a short response that is only such chatter, or an offer of help that asks
  to be given what it should answer;
- ``near_identical``: two candidates of one instruction that hardly differ;
- ``repetition``: a runaway loop (an n-gram or a line repeated over and over);
- ``mixed_language``: a whole sentence or line in another language than asked;
- ``label_malformed`` / ``label_copied``: taxonomy labels that are template fragments, stray
  markup, "Key Concepts:" prefixes, or wording copied from the prompt that asked for them.
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any

from taxoforge.langid import check_segments

__all__ = [
    "DEFAULT",
    "Finding",
    "PromptSource",
    "Thresholds",
    "asks",
    "copied_examples",
    "echo",
    "excerpt",
    "label_problem",
    "mixed_language",
    "near_identical",
    "no_answer",
    "not_a_request",
    "prompt_examples",
    "prompt_leak",
    "prompt_source",
    "repetition",
    "schema_wording",
    "similarity",
    "template_wording",
    "tokens",
]


@dataclass(frozen=True)
class Thresholds:
    """Where each check draws its line (services expose these as settings)."""

    # echo: the response holds this share of the instruction's tokens, in order, including
    # this share of its opening and of its close...
    echo_containment: float = 0.8
    # ...and is at most this many times as long (a longer text answers something).
    echo_length_factor: float = 1.5
    # near_identical: two candidates at least this similar (token sequence ratio) are one.
    near_identical: float = 0.9
    # prompt_leak: a run of this many tokens of a template's fixed wording is a leak.
    leak_ngram: int = 6
    # repetition: tokens covered by n-grams (this long) that occur 3 times or more...
    repeat_ngram: int = 4
    # ...at or above this share of the text is a loop.
    repeat_coverage: float = 0.4
    # repetition: a line (3 tokens or more) repeated this many times in a row is a loop.
    repeat_lines: int = 4
    # mixed_language: sentences with fewer letters are not judged (CJK characters count 2).
    mixed_min_letters: int = 40
    # mixed_language: how sure the detector must be that a sentence is in another language.
    mixed_sure: float = 0.9


DEFAULT = Thresholds()


@dataclass(frozen=True)
class Finding:
    """Why a text is degenerate: a gate reason and a readable detail."""

    reason: str
    detail: str


_CJK_CLASS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
# A CJK character is a token of its own (those scripts put no spaces between words).
_TOKEN = re.compile(rf"[{_CJK_CLASS}]|[^\W_{_CJK_CLASS}]+")
_CJK_CHAR = re.compile(f"[{_CJK_CLASS}]")
_EXCERPT = 200


def tokens(text: str) -> list[str]:
    """Case-folded word tokens (each CJK character one token); punctuation is not a token.

    A new list each call; the tokens of the texts seen last are remembered, since the gates
    of one reply each ask for the same text's (a response is tokenized by ``echo``,
    ``no_answer`` and ``prompt_leak`` in turn: ~50 us each for 300 words)."""
    return list(_tokens(text))


@functools.lru_cache(maxsize=256)
def _tokens(text: str) -> tuple[str, ...]:
    return tuple(_TOKEN.findall(unicodedata.normalize("NFKC", text).casefold()))


def excerpt(text: str, limit: int = _EXCERPT) -> str:
    """A short excerpt of ``text`` for a report."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# ---- similarity: echo, near-identical candidates ----

_MAX_COMPARED = 3000


def similarity(a: str | Sequence[str], b: str | Sequence[str]) -> float:
    """How alike two texts are, 0 to 1, on their token sequences (punctuation and case do not
    count)."""
    ta = tokens(a) if isinstance(a, str) else list(a)
    tb = tokens(b) if isinstance(b, str) else list(b)
    if not ta and not tb:
        return 1.0
    if not ta or not tb:
        return 0.0
    bound = 2 * min(len(ta), len(tb)) / (len(ta) + len(tb))
    if bound < 0.5:
        return bound  # the lengths alone say they differ; no need to align them
    ta, tb = ta[:_MAX_COMPARED], tb[:_MAX_COMPARED]
    return SequenceMatcher(None, ta, tb, autojunk=False).ratio()


def near_identical(
    text: str, others: Iterable[tuple[str, str]], t: Thresholds = DEFAULT
) -> Finding | None:
    """Whether ``text`` hardly differs from one of ``others`` ((id, text) pairs): two
    candidates of one instruction must differ for a pair to mean anything."""
    mine = tokens(text)
    for other_id, other in others:
        score = similarity(mine, tokens(other))
        if score >= t.near_identical:
            return Finding("near_identical", f"{score:.2f} similar to {other_id}")
    return None


def _covered(source: list[str], target: list[str]) -> list[bool]:
    """Which tokens of ``source`` appear, in order, in ``target`` (runs of 2 tokens or more,
    or single tokens when the source is that short)."""
    matcher = SequenceMatcher(None, source, target, autojunk=False)
    least = 1 if len(source) < 4 else 2
    covered = [False] * len(source)
    for block in matcher.get_matching_blocks():
        if block.size >= least:
            for i in range(block.a, block.a + block.size):
                covered[i] = True
    return covered


def echo(instruction: str, response: str, t: Thresholds = DEFAULT) -> Finding | None:
    """Whether ``response`` restates ``instruction`` instead of answering it.

    The response must hold nearly all of the instruction, its opening and its close included,
    and be not much longer: an edit task's answer (the text corrected, without the request)
    or an answer that quotes the question and then answers it is not an echo.
    """
    ti, tr = tokens(instruction), tokens(response)
    if not ti or not tr:
        return None
    if len(tr) > t.echo_length_factor * len(ti) + 2:
        return None
    # Only tokens the response has can be covered, and both findings need that share of the
    # instruction covered: without it, aligning the two (the costly part) cannot find an echo.
    present = frozenset(tr)
    if sum(token in present for token in ti) / len(ti) < t.echo_containment:
        return None
    covered = _covered(ti, tr)
    share = sum(covered) / len(ti)
    edge = min(12, len(ti))
    head = sum(covered[:edge]) / edge
    tail = sum(covered[-edge:]) / edge
    if min(share, head, tail) >= t.echo_containment:
        return Finding("echo", f"restates the instruction ({share:.0%} of it, in order)")
    # Nearly all of it, from its opening or to its close, with little of its own around it
    # (a preamble such as "Alright! Here it is:"): a restatement too.
    own = 1.0 - sum(_covered(tr, ti)) / len(tr)
    if share >= t.echo_containment and max(head, tail) >= t.echo_containment and own <= 0.3:
        return Finding(
            "echo", f"restates the instruction ({share:.0%} of it, {own:.0%} of its own)"
        )
    return None


# ---- instructions that are not requests ----

_APOSTROPHE = str.maketrans({"\u2019": "'", "\u02bc": "'", "\u2018": "'"})
# An assistant offering help: first person + ready/happy to help, "how can I help", "let me
# know", "feel free to ask", in the languages drafts are most often written in.
_OFFER_BRANCHES = (
    r"\b(?:i'?m|i am|we'?re|we are)\s+(?:\w+\s+)?(?:ready|happy|glad|here|delighted|pleased|"
    r"available)\s+to\s+(?:help|assist|answer|support|guide)"
    r"|\bhow (?:can|may|could|shall) (?:i|we) (?:help|assist|be of)"
    r"|\b(?:i|we)(?:'d| would) (?:be )?(?:happy|glad|delighted|love) to (?:help|assist|answer)"
    r"|\b(?:i|we) (?:can|will|'ll|could) (?:certainly |gladly )?(?:help|assist) you"
    r"|\blet me know (?:if|what|how|when|which)"
    r"|\b(?:i'?ll|i will|i can|i'?m going to|i am going to)\s+(?:\w+\s+){0,2}"
    r"(?:provide|respond|reply|answer)\b"
    r"|\bfeel free to (?:ask|reach|share|send)"
    r"|\bwhat (?:would|do) you (?:like|want|need) (?:me )?(?:to|help)"
    r"|\bje suis (?:\w+ )?(?:prête?|là|heureux|heureuse|ravie?|disponible) (?:à|de|pour) "
    r"(?:vous |t'|te )?(?:aider|répondre|assister|accompagner)"
    r"|\bcomment (?:puis-je|pourrais-je|est-ce que je peux) (?:vous |t'|te )?aider"
    r"|\bje (?:peux|pourrais|vais) (?:vous|t'|te) aider"
    r"|\bn'hésitez pas à"
    r"|\bich (?:bin|stehe) (?:\w+ ){0,3}(?:bereit|hier|da|zur verfügung)\b[^.!?]{0,40}\bhelfen"
    r"|\bich helfe (?:ihnen|dir|euch)"
    r"|\bwie kann ich (?:ihnen|dir|euch) (?:\w+ )?helfen"
    r"|\b(?:ihnen|dir|euch) (?:gerne |gern )(?:zu )?helfen"
    r"|\bzögern sie nicht"
    r"|\bestoy (?:\w+ )?(?:list[oa]|aquí|encantad[oa]|disponible) (?:para|de|a) "
    r"(?:ayudar|responder)"
    r"|\ben qué (?:te |le )?puedo ayudar|\bpuedo ayudarte|\bno dudes en"
    r"|\bsono (?:\w+ )?(?:pront[oa]|qui|felice|disponibile) (?:a|ad|per) (?:aiutar|rispondere)"
    r"|\bcome posso (?:aiutar|esserti)"
    r"|\bestou (?:\w+ )?(?:pront[oa]|aqui|feliz|disponível) (?:para|a|em) (?:ajudar|responder)"
    r"|\bcomo posso (?:te |lhe )?ajudar"
    r"|(?:我|我们)(?:很|非常)?(?:乐意|高兴|可以|愿意|随时|准备好|将)[^。\uff01\uff1f?]{0,8}(?:帮助|帮忙|协助|回答|解答)"
    r"|有什么(?:可以|能|我能)?(?:帮|为)(?:您|你)"
    r"|(?:请|欢迎)随时(?:提问|告诉我|联系)"
    r"|(?:お手伝い|サポート)(?:します|いたします|できます|させて)"
)
# Where a branch of ``_OFFER_BRANCHES`` can start: a word boundary before the first letter of
# one of its Latin branches (each opens with ``\b``), or the first character of a CJK one.
# Checked first at each position, it turns nearly every position away at once where the
# search tried ~30 branches there: 5x faster on an answer's opening sentences.
_OFFER_STARTS = r"(?:\b(?=[cdefhijlnpswz])|(?=[我有请欢おサ]))"
_OFFER = re.compile(f"{_OFFER_STARTS}(?:{_OFFER_BRANCHES})", re.IGNORECASE)
# Words every branch of ``_OFFER`` holds (matched with the same flags, so a text without any of
# them cannot match it): ``_OFFER`` tries each of its branches at every position, which made it
# the costliest check of a draft; this finds its few words in a fraction of the time.
_OFFER_WORD_LIST = (
    r"help|assist|answer|support|guide|be of|let me know|provide|respond|reply|feel free to|"
    r"you like|you want|you need|aider|répondre|accompagner|hésitez pas|helfe|zögern|ayudar|"
    r"dudes en|aiutar|rispondere|esserti|ajudar|"
    r"帮助|帮忙|协助|回答|解答|有什么|随时|お手伝い|サポート"
)
# The words' first characters, checked first at each position (as ``_OFFER_STARTS``): twice
# as fast as trying every word there.
_OFFER_WORD_STARTS = r"(?=[abdefghlprsyz帮协回解有随おサ])"
_OFFER_WORDS = re.compile(f"{_OFFER_WORD_STARTS}(?:{_OFFER_WORD_LIST})", re.IGNORECASE)


def _offer(text: str) -> re.Match[str] | None:
    """``_OFFER.search(text)``, asked only when the text holds one of its words."""
    return _OFFER.search(text) if _OFFER_WORDS.search(text) else None


# An answer's preamble: an acknowledgment that opens a reply, not a request.
_ACKNOWLEDGE = re.compile(
    r"^\W*(?:sure|certainly|of course|absolutely|no problem|gladly|alright|all right|okay|ok|"
    r"got it|understood|bien sûr|certainement|d'accord|entendu|alles klar|verstanden|vale|"
    r"va bene|"
    r"avec plaisir|volontiers|natürlich|gerne|gern|selbstverständlich|claro|por supuesto|"
    r"desde luego|certo|certamente|com certeza|当然|好的|没问题|もちろん|かしこまりました)"
    r"(?:\s*(?:[!,.:;\uff01\uff0c。\uff1a]|$)|\s+(?:here|voici|hier|aquí|ecco|aqui))",
    re.IGNORECASE,
)
# "Here is your question:" and its kin: the assistant presenting what it was asked to write.
_PRESENT = re.compile(
    r"^\W*(?:here(?:'s| is| are)|below (?:is|are)|voici|voilà|hier (?:ist|sind)|"
    r"aquí (?:tienes|tiene|está|están)|ecco|aqui (?:está|estão)|以下是|这是|下面是)"
    r"[^.?!\n]{0,60}?(?:question|request|instruction|prompt|exercise|task|homework|problem|"
    r"answer|response|devoir|exercice|consigne|réponse|frage|aufgabe|antwort|übung|pregunta|"
    r"tarea|respuesta|ejercicio|domanda|compito|risposta|pergunta|resposta|问题|题目|作业|指令|回答)",
    re.IGNORECASE,
)
# A "request" that only sends the reader elsewhere.
_LINK = re.compile(
    r"\b(?:go to|visit|click|open|follow|check out|refer to|allez sur|cliquez|consultez|"
    r"besuchen sie|klicken sie|gehen sie zu|visita|haz clic|ve a)\b[^.?!\n]{0,40}?"
    r"\b(?:link|url|website|web ?site|site|page|lien|webseite|seite|enlace|sitio|página)"
    r"|(?:访问|点击|打开)[^。\uff01\uff1f]{0,10}(?:链接|网站|网页)",
    re.IGNORECASE,
)
# Words every branch of ``_LINK`` holds (see ``_OFFER_WORDS``).
_LINK_WORDS = re.compile(
    r"link|url|site|page|lien|seite|enlace|sitio|página|链接|网站|网页", re.IGNORECASE
)
_GREETING = re.compile(
    r"^\W*(?:hello|hi|hey|greetings|good (?:morning|afternoon|evening)|bonjour|salut|bonsoir|"
    r"hallo|guten (?:morgen|tag|abend)|hola|buenos días|ciao|buongiorno|olá|bom dia|你好|您好|"
    r"こんにちは)\b",
    re.IGNORECASE,
)
_QUESTION = re.compile(r"[?\uff1f\u00bf]")
_SHORT_CHATTER = 12
# The rewriter talking about its own work ("To make the instruction more challenging, I can
# ..."): a comment on our prompt's task, not a request of its own.
_META = re.compile(
    r"^\W*(?:to|in order to) (?:make|render|turn|improve|rewrite|rephrase) (?:the|this|your) "
    r"(?:given |original |above )?(?:instruction|question|prompt|task|request)\b"
    r"|^\W*(?:your|the) (?:question|request|instruction|prompt)\s*[:\uff1a]"
    r"|^\W*(?:votre|ta) (?:question|demande|consigne)\s*:"
    r"|^\W*(?:ihre|deine) (?:frage|anfrage|anweisung)\s*:",
    re.IGNORECASE,
)

# Our CodecLM improve prompt's intent, paraphrased into the instruction it was to rewrite ("How
# could the instruction be reworked to make it more challenging?"): the writer's task, not a
# user's request. Only "instruction" counts: a user may well ask to improve a prompt.
_HARDER = (
    r"(?:more (?:challenging|demanding|difficult|complex|specific|detailed)|harder|"
    r"plus (?:difficile|exigeante?|complexe|précise)|"
    r"schwieriger|anspruchsvoller|komplexer|präziser|"
    r"más (?:difícil|exigente|complej[ao]|específic[ao])|"
    r"più (?:difficile|impegnativ[ao]|compless[ao]|specific[ao])|"
    r"mais (?:difícil|exigente|complex[ao]|específic[ao]))"
)
_INSTRUCTION_WORD = (
    r"(?:instructions?|consignes?|anweisung(?:en)?|instrucci[oó]n(?:es)?|istruzion[ei])"
)
_IMPROVE_TALK = re.compile(
    rf"\b{_INSTRUCTION_WORD}\b[^.?!\n]{{0,60}}\b{_HARDER}"
    rf"|\b{_HARDER}\b[^.?!\n]{{0,60}}\b{_INSTRUCTION_WORD}\b"
    r"|\b(?:the )?(?:rewritten|improved|reworked|revised) instruction\b"
    r"|\bhere(?:'s| is) (?:a |the |my )?(?:rewritten|revised|improved|reworked|harder|more \w+) "
    r"(?:version|instruction|question|task)\b"
    r"|\bthe instruction (?:be|is|was|has been|should be) (?:reworked|rewritten|reworded|"
    r"rephrased|improved|revised|changed)\b",
    re.IGNORECASE,
)

# ---- the signals of a request ----
# A request asks: a question mark, a question word or an imperative opening a sentence, or an
# ask anywhere ("please", "can you", "I want you to", "your task is"). Lexicons for the
# languages drafts are most often written in; a text in a script with no lexicon here is not
# judged by this rule.
_SENTENCE = re.compile(r"(?<=[.!;:\u3002\uff01\uff1b\uff1a])\s+|\n+|(?<=[\u3002\uff01])")
_LEAD = re.compile(
    r"^(?:[\W\d_]*(?:step|task|question|exercise|problem|q|aufgabe|frage|exercice|tâche|"
    r"consigne|pregunta|tarea|ejercicio|domanda|compito|esercizio|pergunta|tarefa)?"
    r"\s*\d*\s*[:.)\-]?\s*)*"
    r"(?:(?:please|kindly|now|then|also|first|next|finally|briefly|carefully|bitte|"
    r"veuillez|por favor|per favore|s'il vous plaît|s'il te plaît)\W+)*",
    re.IGNORECASE,
)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_ASK_WORDS = _words(
    # English: question words, auxiliaries opening a question, imperatives of tasks.
    """what why how when where which who whom whose is are was were can could would should do
    does did will shall may might have has am write explain describe compare contrast list name
    give provide create generate design develop build implement code program compute calculate
    solve find determine identify classify categorize categorise summarize summarise translate
    rewrite rephrase paraphrase edit correct fix debug improve evaluate assess analyze analyse
    discuss argue justify prove show derive estimate predict propose suggest recommend plan
    outline draft compose construct convert transform sort rank order arrange match fill
    complete continue extract select choose pick decide define illustrate demonstrate state
    tell answer respond reply imagine pretend act consider suppose assume help make produce
    prepare formulate simplify expand shorten reduce count measure check verify test validate
    review critique interpret explore investigate research examine study detail elaborate
    clarify brainstorm invent compile organize organise format reformat optimize optimise
    refactor use apply simulate sketch draw plot graph diagram label annotate highlight recall
    enumerate specify indicate locate search look read teach guide walk take let conduct
    perform run execute return print parse split merge combine separate divide multiply add
    subtract integrate differentiate factor factorise factorize transcribe conjugate detect
    recognize recognise distinguish relate connect weigh rate score grade judge characterize
    report document schedule allocate assign distribute approximate round balance introduce
    summarise invite thank persuade convince advise remind express share reflect think guess
    infer deduce hypothesize observe practise practice rearrange reorder remove delete insert
    replace change modify adjust adapt tidy shorten lengthen split count find offer devise
    craft pose set frame mention cite quote locate figure work come try keep go say sum put
    get be type play sing recite roleplay speak spell turn identify follow learn memorize
    memorise translate transliterate convince solve estimate
    """
    # French: question words and "tu" imperatives (the "vous" ones end in -ez, below).
    """quel quelle quels quelles comment pourquoi combien où quand qui que qu lequel laquelle
    lesquels lesquelles est-ce explique écris décris donne rédige calcule trouve compare cite
    indique résume traduis propose analyse identifie définis justifie démontre montre réponds
    classe imagine choisis complète corrige nomme énumère liste crée conçois fais prouve
    """
    # German: question words, "du" imperatives (the "Sie" ones are "<verb>en Sie", below).
    """wie warum was welche welcher welches welchen welchem wo wann wieso weshalb wer wem wen
    wessen inwiefern wozu woher wohin worin womit kann können kannst könnte könnten ist sind
    gibt erkläre erklär schreibe schreib beschreibe beschreib vergleiche vergleich nenne nenn gib
    berechne finde fasse übersetze erstelle entwickle erläutere begründe zeige bestimme
    analysiere diskutiere liste löse ordne formuliere stelle überlege wähle ergänze korrigiere
    prüfe entwirf skizziere
    """
    # Spanish, Italian, Portuguese: question words and common imperatives.
    """qué cómo por cuál cuáles dónde cuándo cuánto cuánta cuántos cuántas quién quiénes
    explique explica describa describe escriba escribe compara calcule calcula enumere enumera
    indica resuma resume traduzca traduce proponga propón analice analiza diseñe diseña cree
    crea da dé dame deme haz haga encuentre encuentra identifique identifica defina justifique
    justifica demuestre demuestra responda responde elabora elabore redacta redacte menciona
    mencione clasifica clasifique nombra nombre imagina resuelve resuelva
    cosa come perché quale quali dove quanto quanta quanti quante chi spiega spieghi descrivi
    descriva scrivi scriva confronta confronti calcoli elenca elenchi indichi riassumi traduci
    proponi analizza dai dammi fai trova definisci dimostra rispondi risolvi immagina
    o qual quais onde quando quem descreva descreve escreva escreve liste lista traduza
    proponha analise crie cria dá faça faz defina demonstre ajude resolva
    """
)
_RELATIVE = _words(
    """which who whom whose where when is are was were can could would should do does did will
    shall may might have has am que qui qu où quand wo wann was wer wem wen wessen welche welcher
    welches welchen welchem ist sind kann können könnte könnten gibt donde cuando quien quienes
    cual cuales dove quando chi quale quali onde quem o da dé dá"""
)
# French "vous" imperatives and German "Sie" imperatives opening a sentence.
_IMPERATIVE_FORM = re.compile(
    r"^(?:[a-zà-ÿ]+ez(?:-(?:vous|moi|nous|le|la|les|en|y))?|[a-zäöüß]+en sie)\b", re.IGNORECASE
)
# An ask anywhere in the text.
_ASK = re.compile(
    r"\b(?:please|can you|could you|would you|will you|i want you to|i'?d like (?:you|to)|"
    r"i would like (?:you|to)|i need (?:you|help|a|an|to|some)|help me|tell me|show me|"
    r"let'?s|you (?:are|were|will be) (?:asked|required|expected) to|"
    r"you (?:must|should|need to|have to)|your (?:task|job|goal|assignment) is|"
    r"the task is|what is|what are|how (?:do|does|can|would|should|to)|is it|"
    r"i (?:want|need|would like|wonder|was wondering|keep getting|don'?t understand|"
    r"do not understand|can'?t figure)|"
    r"i(?:'m| am) (?:trying|looking|planning|wondering|getting|stuck|confused|struggling)|"
    r"any (?:ideas|suggestions|tips|recommendations|advice|thoughts)|"
    r"pouvez-vous|pourriez-vous|peux-tu|pourrais-tu|s'il vous plaît|s'il te plaît|"
    r"vous devez|tu dois|il faut|votre tâche|je (?:voudrais|veux|souhaite|aimerais) que|"
    r"aide-moi|aidez-moi|dites-moi|dis-moi|est-ce que|qu'est-ce|"
    r"bitte|können sie|könnten sie|kannst du|könntest du|sie sollen|du sollst|ihre aufgabe|"
    r"deine aufgabe|ich (?:möchte|will|brauche)|hilf mir|helfen sie mir|"
    r"por favor|puedes|podrías|puede usted|podría|necesito|quiero que|ayúdame|tu tarea|"
    r"per favore|puoi|potresti|vorrei che|aiutami|il tuo compito|"
    r"você pode|poderia|gostaria que|preciso|me ajude|ajude-me|sua tarefa)\b",
    re.IGNORECASE,
)
_CJK_ASK = re.compile(
    r"[吗呢\uff1f]|请|什么|如何|为什么|怎么|怎样|哪|多少|是否|能否|试|写|解释|描述|说明|列出|计算|"
    r"比较|分析|总结|翻译|设计|给出|举例|帮我|ください|なさい|ですか|ますか|でしょうか|何|なぜ|"
    r"どう|どの|いくつ|説明|書いて|教えて|比較|計算|まとめ|答え"
)
_LATIN_WORD = re.compile(r"[A-Za-zÀ-ÿ]")


def asks(text: str) -> bool | None:
    """Whether ``text`` asks for something: a question, an imperative opening one of its
    sentences, or an ask ("please", "can you", "your task is") anywhere; None when its script
    has no lexicon here (neither Latin nor Chinese/Japanese), so no rule can say."""
    plain = text.translate(_APOSTROPHE)
    if _QUESTION.search(plain):
        return True
    if _CJK_CHAR.search(plain) and len(_CJK_CHAR.findall(plain)) * 2 > len(tokens(plain)):
        return bool(_CJK_ASK.search(plain))
    if not _LATIN_WORD.search(plain):
        return None
    if _ASK.search(plain):
        return True
    for sentence in _SENTENCE.split(plain):
        for n, clause in enumerate(sentence.split(",")):
            lead = _LEAD.match(clause)
            rest = clause[lead.end() if lead else 0 :].lstrip("*_#>\"'“«( -•").strip()
            if not rest:
                continue
            first = rest.split(None, 1)[0].casefold().strip(",.:;!\"'”»)")
            # After a comma "which", "who", "que" open relative clauses, not questions.
            words = _ASK_WORDS if n == 0 else _ASK_WORDS - _RELATIVE
            if first in words or re.split(r"[-']", first, maxsplit=1)[0] in words:
                return True
            if _IMPERATIVE_FORM.match(rest):
                return True
    return False


def not_a_request(text: str) -> Finding | None:
    """Whether an instruction is not a request: the assistant's voice (an offer to help, an
    answer's preamble, presenting "your question"), a greeting with no question, a pointer
    to a link, the writer commenting on our prompt ("To make the instruction more..."), or a
    statement that asks nothing (``asks``). A request may still start with "Hello", say
    "help me" or describe the user's problem ("I'm getting a KeyError...")."""
    plain = text.translate(_APOSTROPHE).strip()
    if (chatter := _chatter(plain)) is not None:
        return chatter
    if (meta := _META.match(plain) or _IMPROVE_TALK.search(plain)) is not None:
        return Finding("not_a_request", f"talks about the prompt: {meta.group(0).strip()!r}")
    if asks(plain) is False:
        return Finding("not_a_request", "neither a question nor an ask: a statement only")
    return None


# ``_chatter``'s offer not searched yet (None is a search that found nothing).
_UNSEARCHED: Any = object()


def _chatter(plain: str, offer: re.Match[str] | None = _UNSEARCHED) -> Finding | None:
    """The assistant's voice: an offer, an answer's preamble, a pointer to a link, a bare
    greeting. ``offer``: ``_offer(plain)`` when the caller has it already."""
    if offer is _UNSEARCHED:
        offer = _offer(plain)
    if (found := offer) is not None:
        return Finding("not_a_request", f"the assistant's voice: {found.group(0)!r}")
    if (found := _ACKNOWLEDGE.match(plain)) is not None:
        return Finding("not_a_request", f"opens like an answer: {found.group(0).strip()!r}")
    if (found := _PRESENT.match(plain)) is not None:
        return Finding("not_a_request", f"presents an answer: {found.group(0).strip()!r}")
    if _LINK_WORDS.search(plain) and (found := _LINK.search(plain)) is not None:
        return Finding("not_a_request", f"points to a link: {found.group(0)!r}")
    if (
        _GREETING.match(plain)
        and not _QUESTION.search(plain)
        and len(tokens(plain)) <= _SHORT_CHATTER
    ):
        return Finding("not_a_request", "a greeting with no task")
    return None


_NO_ANSWER_TOKENS = 25
# The assistant asking to be given what it should have answered.
_ASK_FOR_INPUT = re.compile(
    r"\b(?:please|kindly) (?:provide|share|give|send|tell|specify|clarify|paste|upload|describe"
    r"|let me know)"
    r"|\b(?:could|can|would) you (?:please )?(?:provide|share|give|send|tell|specify|clarify|"
    r"paste|describe)"
    r"|\bi (?:need|would need|'d need) (?:more|some|the|additional) (?:information|details|"
    r"context)"
    r"|\bveuillez (?:fournir|préciser|indiquer|partager|me donner)"
    r"|\bpourriez-vous (?:me )?(?:fournir|préciser|indiquer|partager|donner)"
    r"|\bbitte (?:geben|teilen|nennen|schicken|senden) sie"
    r"|\bkönnten sie (?:mir )?(?:\w+ )?(?:geben|mitteilen|nennen|schicken)"
    r"|\bpor favor,? (?:proporcione|proporciona|indique|indica|comparte|comparta)"
    r"|请提供|请告诉我",
    re.IGNORECASE,
)
_HEAD_SENTENCES = 3


def no_answer(text: str) -> Finding | None:
    """Whether a response is only the assistant's chatter: short and nothing but an offer, a
    preamble or a pointer ("I'm ready to help with your question.", "Please go to the
    following link"), or, whatever its length, an offer that asks to be given what it should
    answer ("I'm ready to assist you. Please provide the information..."). A long answer that
    opens with "Sure!" answers."""
    plain = text.translate(_APOSTROPHE).strip()
    # Split no further than the head: splitting a long answer whole took longer than the rest.
    head = " ".join(_SENTENCE.split(plain, _HEAD_SENTENCES)[:_HEAD_SENTENCES])
    offered = _offer(head)
    offer = offered or _ACKNOWLEDGE.match(head)
    if offer is not None and (ask := _ASK_FOR_INPUT.search(head)) is not None:
        return Finding(
            "no_answer",
            f"offers help and asks for input: {offer.group(0).strip()!r} … {ask.group(0)!r}",
        )
    if len(tokens(text)) > _NO_ANSWER_TOKENS:
        return None
    # A short text is most often its own head: its offer was searched for already.
    found = _chatter(plain, offered) if head == plain else _chatter(plain)
    if found is None:
        return None
    return Finding("no_answer", found.detail)


# ---- our own prompts in the output ----

_FIELD = re.compile(r"\$\{\w+\}")
_TAG_NAME = re.compile(r"<</?([A-Za-z_][\w]*)-\$\{\w+\}>>")
_MARKER_IN_PROMPT = re.compile(r"<</?[A-Za-z_][\w]*-([0-9A-Za-z]{6,})>>")
# Delimiters no answer needs: "<</x", "<<word>>", "<<word-...", chat-template tokens.
_DELIMITER = re.compile(
    r"<</\s*[A-Za-z]|<<[A-Za-z_][\w]*>>|<<[A-Za-z_][\w]*-[0-9a-f]{4,}|"
    r"<\|[A-Za-z_]+\|>|\[/?INST\]|<</?SYS>>|</?s>"
)


@dataclass(frozen=True)
class PromptSource:
    """What a reply was prompted with, for ``prompt_leak``: the template's fixed wording (field
    values cut out, so a seed's own subject words never count), the tag names and per-prompt
    markers its delimiters carried, and taxonomy paths given to it."""

    wording: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    markers: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    # The field values the prompt was given as names (node and task titles, key concepts,
    # sessions, use case, skills): words a reply may use, but never as a line of their own.
    labels: tuple[str, ...] = ()
    _ngrams: dict[int, frozenset[tuple[str, ...]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def ngrams(self, n: int) -> frozenset[tuple[str, ...]]:
        """The fixed wording's n-grams (never across a field)."""
        if n not in self._ngrams:
            grams: set[tuple[str, ...]] = set()
            for part in self.wording:
                words = tokens(part)
                grams.update(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
            self._ngrams[n] = frozenset(grams)
        return self._ngrams[n]


def template_wording(*texts: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A template's fixed wording (its texts cut at each ``${field}``) and its delimiter tag
    names ("instruction" for ``<<instruction-${nonce}>>``)."""
    parts: list[str] = []
    names: set[str] = set()
    for text in texts:
        names.update(_TAG_NAME.findall(text))
        parts.extend(p for p in _FIELD.split(_TAG_NAME.sub(" ", text)) if p.strip())
    return tuple(parts), tuple(sorted(names))


def prompt_source(
    system: str, user: str, messages: Sequence[dict[str, str]] = (), paths: Sequence[str] = ()
) -> PromptSource:
    """The ``PromptSource`` of a template (``system`` and ``user`` texts) as rendered into
    ``messages`` (whose delimiters carry the per-prompt markers)."""
    wording, tags = template_wording(system, user)
    rendered = "\n".join(m.get("content", "") for m in messages)
    markers = tuple(sorted(set(_MARKER_IN_PROMPT.findall(rendered))))
    return PromptSource(
        wording=wording, tags=tags, markers=markers, paths=tuple(p for p in paths if p)
    )


def _path_pairs(path: str) -> list[str]:
    parts = [" ".join(p.split()).casefold() for p in path.split(">") if p.strip()]
    return [f"{a} > {b}" for a, b in itertools.pairwise(parts)]


def prompt_leak(text: str, source: PromptSource, t: Thresholds = DEFAULT) -> Finding | None:
    """Whether ``text`` holds our own prompt: a delimiter, a per-prompt marker, a run of
    ``leak_ngram`` tokens of the template's fixed wording, or a step of a taxonomy path."""
    if (found := _DELIMITER.search(text)) is not None:
        return Finding("prompt_leak", f"a prompt delimiter: {found.group(0)!r}")
    for name in source.tags:
        if re.search(rf"<<\s*/?\s*{re.escape(name)}\b|\b{re.escape(name)}-[0-9a-f]{{6,}}", text):
            return Finding("prompt_leak", f"the prompt's {name!r} delimiter")
    for marker in source.markers:
        if marker in text:
            return Finding("prompt_leak", "the prompt's marker")
    flat = " ".join(text.split()).casefold()
    for path in source.paths:
        for pair in _path_pairs(path):
            if pair in flat:
                return Finding("prompt_leak", f"the taxonomy path {pair!r}")
    if source.labels and (line := _label_line(text, source)) is not None:
        return Finding("prompt_leak", f"the prompt's fields as a line of their own: {line!r}")
    grams = source.ngrams(t.leak_ngram)
    if grams:
        words = tokens(text)
        n = t.leak_ngram
        for i in range(len(words) - n + 1):
            gram = tuple(words[i : i + n])
            if gram in grams:
                return Finding("prompt_leak", f"the prompt's wording: {' '.join(gram)!r}")
    return None


def _label_key(text: str) -> str:
    return " ".join(tokens(text)).casefold()


def _label_line(text: str, source: PromptSource) -> str | None:
    """A line that is nothing but the prompt's field values (a node or task title, a list of
    its key concepts, a path step): the model copying its brief as a heading."""
    known = {_label_key(label) for label in source.labels if label.strip()}
    for path in source.paths:
        known.update(_label_key(p) for p in path.split(">") if p.strip())
    known.discard("")
    for line in text.splitlines():
        stripped = line.strip().strip("#*-:•").strip()
        if not stripped:
            continue
        parts = [p for p in re.split(r"[,;/|>]| - ", stripped) if p.strip()]
        if parts and all(_label_key(p) in known for p in parts):
            return stripped[:80]
    return None


# ---- runaway repetition ----

_FENCED = re.compile(r"```.*?```", re.DOTALL)
_MIN_TOKENS = 24
_REPEATED = 3
_MIN_LINE_TOKENS = 3


def repetition(text: str, t: Thresholds = DEFAULT) -> Finding | None:
    """Whether ``text`` runs away in a loop: the same line ``repeat_lines`` times in a row, or
    n-grams repeated 3 times or more covering ``repeat_coverage`` of its prose (code, where
    repeats are normal, is left out of that share)."""
    run, last = 0, None
    for line in text.splitlines():
        words = tokens(line)
        if not words:
            continue
        if len(words) >= _MIN_LINE_TOKENS and words == last:
            run += 1
            if run >= t.repeat_lines:
                return Finding("repetition", f"a line repeated {run} times: {excerpt(line, 80)!r}")
        else:
            run = 1
        last = words
    words = tokens(_FENCED.sub(" ", text))
    if len(words) < _MIN_TOKENS:
        return None
    # Character-token scripts need longer n-grams for the same span of text.
    cjk = sum(len(w) == 1 and bool(_CJK_CHAR.match(w)) for w in words)
    n = t.repeat_ngram * (2 if cjk > len(words) / 2 else 1)
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    counts = Counter(grams)
    covered = [False] * len(words)
    for i, gram in enumerate(grams):
        if counts[gram] >= _REPEATED:
            for j in range(i, i + n):
                covered[j] = True
    share = sum(covered) / len(words)
    if share >= t.repeat_coverage:
        top, times = counts.most_common(1)[0]
        return Finding(
            "repetition", f"{share:.0%} of the text repeats; {' '.join(top)!r} {times} times"
        )
    return None


# ---- mixed language ----


def mixed_language(text: str, language: str, t: Thresholds = DEFAULT) -> Finding | None:
    """Whether a whole sentence or line of ``text`` is in another language than ``language``
    (judged sentence by sentence; quotes and code may be in any language)."""
    if not language:
        return None
    verdict = check_segments(text, language, t.mixed_min_letters, t.mixed_sure)
    if verdict.ok:
        return None
    return Finding(
        "mixed_language",
        f"asked {language}, a sentence looks like {verdict.detected} "
        f"({verdict.confidence:.2f}): {excerpt(verdict.segment, 80)!r}",
    )


# ---- taxonomy labels ----

_MARKUP = re.compile(r"[{}<>|\\]|\$\{|\*\*|^#|`")
# "Key Concepts: x", "Skill 2 - x", "use_case: x": a field name the model wrote into a value.
_PREFIX = re.compile(r"^\s*[\w][\w ]{0,30}?\s*\d*\s*[:\uff1a]\s*\S")
_SCHEMA_NAME = re.compile(r"^[a-z]+(?:_[a-z]+)+$")
_LABEL_WORDS = 12
_COPIED_RUN = 3
# A label at least this well supported by the data (share of its content words) is its own.
_SUPPORTED = 0.5
_QUOTED = re.compile(r'"([^"]{2,80})"|“([^”]{2,80})”')


def label_problem(
    label: str,
    prompt_wording: Sequence[str],
    data: str = "",
    field_names: Iterable[str] = (),
) -> Finding | None:
    """Why a taxonomy label (use case, skill, tag, subject, session, key concept) cannot be
    kept, or None.

    Malformed: empty, no letters, markup or stray braces, a "Key Concepts:" style prefix, a
    field name ("use_case"), or a sentence rather than a label. Copied: the label is wording of
    the prompt that asked for it (its field descriptions, its examples, its JSON schema) and
    the data the prompt was about (``data``: the instruction, the discipline) does not support
    it, so "email writing" stays for an email task but not for a physics question.
    """
    text = " ".join(label.split())
    words = tokens(text)
    if not words:
        return Finding("label_malformed", f"no words: {text!r}")
    if _MARKUP.search(text):
        return Finding("label_malformed", f"markup or braces: {excerpt(text, 60)!r}")
    if _PREFIX.match(text):
        return Finding("label_malformed", f"a field prefix: {excerpt(text, 60)!r}")
    names = {n.casefold() for n in field_names}
    if _SCHEMA_NAME.match(text) or text.casefold() in names or "_".join(words) in names:
        return Finding("label_malformed", f"a field name: {text!r}")
    if len(words) > _LABEL_WORDS:
        return Finding("label_malformed", f"a sentence, not a label: {excerpt(text, 60)!r}")
    content = [_stem(w) for w in words if len(w) > 3 or _CJK_CHAR.match(w)]
    if not content:
        return None
    supported = {_stem(w) for w in tokens(data)}
    share = sum(w in supported for w in content) / len(content)
    if words in prompt_examples(prompt_wording) or words in [tokens(n) for n in field_names]:
        # The prompt's own example or field title: the right label for some data, whatever
        # words that data uses ("debugging python code" for a traceback); one label alone
        # cannot tell, so ``copied_examples`` judges the labels of one reply together.
        if share == 0 and words in [tokens(n) for n in field_names]:
            return Finding("label_copied", f"the prompt's field: {excerpt(text, 60)!r}")
        return None
    if share >= _SUPPORTED or len(words) == 1:
        return None  # one word is in any prompt; only a quoted example or title counts
    run = min(len(words), _COPIED_RUN)
    for part in prompt_wording:
        if _contains_run(tokens(part), words, run):
            return Finding("label_copied", f"the prompt's wording: {excerpt(text, 60)!r}")
    return None


def prompt_examples(prompt_wording: Sequence[str]) -> list[list[str]]:
    """The quoted examples of a prompt's wording, as tokens."""
    return [
        tokens(m.group(1) or m.group(2)) for part in prompt_wording for m in _QUOTED.finditer(part)
    ]


def copied_examples(labels: Sequence[str], prompt_wording: Sequence[str]) -> list[str]:
    """The labels of one reply that are the prompt's examples, when the reply gives two or more
    of them: a model listing the examples back, not describing its data."""
    examples = prompt_examples(prompt_wording)
    hits = [label for label in labels if tokens(label) in examples]
    return hits if len({" ".join(tokens(h)) for h in hits}) >= 2 else []


def schema_wording(schema: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """A JSON schema's own wording (titles and descriptions) and its property names: labels
    must not be either."""
    wording: list[str] = []
    names: list[str] = []
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key in ("title", "description") and isinstance(value, str):
                    wording.append(value)
                elif key == "properties" and isinstance(value, Mapping):
                    names.extend(str(k) for k in value)
                    stack.extend(value.values())
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    return wording, names


def _stem(word: str) -> str:
    # A crude stem: "explaining" and "explain" meet; enough to tell support from none.
    return word[:5]


def _contains_run(haystack: list[str], words: list[str], run: int) -> bool:
    """Whether a run of ``run`` consecutive tokens of ``words`` appears in ``haystack`` (a
    label shorter than ``run`` must appear whole)."""
    if not haystack or not words:
        return False
    grams = {tuple(haystack[i : i + run]) for i in range(len(haystack) - run + 1)}
    return any(tuple(words[i : i + run]) in grams for i in range(len(words) - run + 1))
