"""How a built-in task is asked: many phrasings per kind, and a disjoint set that no training example uses.

A person does not type the generator's one sentence. Each kind has core sentences with other verbs and
orders ("Give the last word of", "Which word comes last in"; 15 to 17 for each of the demo's four kinds, since
more of them made SFT answer the unseen ones better: docs/design.md); a prompt wraps a core in a polite form
("Please ...", "Could you ...?", "..., please") and ends with the punctuation people use, or none;
repeat's count is a digit, a number word or "twice". The NEW cores are held out: evaluation asks with
them to measure what a person's own phrasing gets (tests/data/test_builtin_tasks.py proves no training
prompt uses one).

Fields in a core: {words} (a list, always after the last ": " so the operands can be read back),
{word} and {times} (repeat), {a} and {b} (arithmetic), {sentence} (copy).
"""

from __future__ import annotations

import random
import re

PHRASINGS = ("train", "new")
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}
QUESTION_OPENERS = ("What", "Which", "How")

_TRAIN: dict[str, tuple[str, ...]] = {
    "add": ("What is {a} + {b}", "What is {a} plus {b}", "Add {a} and {b}", "Compute the sum of {a} and {b}",
            "Work out {a} + {b}"),
    "subtract": ("What is {a} - {b}", "What is {a} minus {b}", "Subtract {b} from {a}", "Take {b} away from {a}",
                 "Compute {a} - {b}"),
    "reverse_words": ("Reverse the words: {words}", "Write these words in reverse order: {words}",
                      "Say these words backwards: {words}", "Give these words in reverse: {words}"),
    "sort_words": ("Sort these words alphabetically: {words}", "Put these words in alphabetical order: {words}",
                   "Write these words from A to Z: {words}", "Sort the words: {words}"),
    "count_words": ("How many words are in: {words}", "Count the words: {words}",
                    "How many words are there in this list: {words}", "Tell me how many words are in: {words}",
                    "Give the number of words in: {words}", "What is the number of words in: {words}",
                    "Count how many words there are: {words}", "Say how many words are in: {words}",
                    "Return the number of words in: {words}", "Give the count of words in: {words}",
                    "Work out how many words are in: {words}", "How many words do you count in: {words}",
                    "Print the number of words in: {words}", "Tell me the number of words in this list: {words}",
                    "Type how many words there are in: {words}"),
    "first_word": ("What is the first word in: {words}", "Give the first word of: {words}",
                   "Which word comes first in: {words}", "Tell me the first word of: {words}",
                   "Write the first word of this list: {words}", "Name the first word in: {words}",
                   "What word comes first in this list: {words}", "Say the first word of: {words}",
                   "Return the first word in: {words}", "Print the first word of: {words}",
                   "Type the first word of: {words}", "Copy the first word from: {words}",
                   "Reply with the first word of: {words}", "What is the opening word of: {words}",
                   "Give the starting word of: {words}", "Which word is at the start of: {words}",
                   "Tell me the word that comes first in: {words}"),
    "last_word": ("What is the last word in: {words}", "Give the last word of: {words}",
                  "Which word comes last in: {words}", "Tell me the last word of: {words}",
                  "Write the last word of this list: {words}", "Name the last word in: {words}",
                  "What word comes last in this list: {words}", "Say the last word of: {words}",
                  "Return the last word in: {words}", "Print the last word of: {words}",
                  "Type the last word of: {words}", "Copy the last word from: {words}",
                  "Reply with the last word of: {words}", "What is the final word of: {words}",
                  "Give the closing word of: {words}", "Which word is at the end of: {words}",
                  "Tell me the word that comes last in: {words}"),
    "uppercase": ("Write in capital letters: {words}", "Make this uppercase: {words}", "Convert to upper case: {words}",
                  "Write this in capitals: {words}"),
    "repeat": ("Say {word} {times}", "Repeat the word {word} {times}", "Write {word} {times}",
               "Print the word {word} {times}", "Type {word} {times}", "Say the word {word} {times}",
               "Repeat {word} {times}", "Print {word} {times}", "Type the word {word} {times}",
               "Write the word {word} {times}", "Reply with {word} {times}", "Return {word} {times}",
               "Produce {word} {times}", "Generate the word {word} {times}", "Copy the word {word} {times}",
               "Spell {word} {times}", "Put down the word {word} {times}"),
    "copy": ("Copy this sentence exactly: {sentence}", "Repeat after me: {sentence}",
             "Write this sentence again: {sentence}"),
}

_NEW: dict[str, tuple[str, ...]] = {
    "add": ("What do you get when you add {a} and {b}", "Find the total of {a} and {b}"),
    "subtract": ("What do you get when you take {b} from {a}", "Find the difference between {a} and {b}"),
    "reverse_words": ("Flip the order of these words: {words}", "List these words backwards: {words}"),
    "sort_words": ("Arrange these words alphabetically: {words}", "Order these words from A to Z: {words}"),
    "count_words": ("How many words does this list have: {words}", "Count the number of words in: {words}",
                    "What's the word count of: {words}", "Find how many words are in: {words}"),
    "first_word": ("Which is the first word of: {words}", "Pick out the first word from: {words}",
                   "Show me the first word in: {words}", "What's the first word of: {words}"),
    "last_word": ("Which is the last word of: {words}", "Pick out the last word from: {words}",
                  "Show me the last word in: {words}", "What's the last word of: {words}"),
    "uppercase": ("Turn this into capital letters: {words}", "Shout these words: {words}"),
    "repeat": ("Write out {word} {times}", "Give me the word {word} {times}", "Output {word} {times}",
               "Show the word {word} {times}"),
    "copy": ("Say this sentence back to me: {sentence}", "Echo this sentence: {sentence}"),
}

_CORES = {"train": _TRAIN, "new": _NEW}


def cores(kind: str, phrasings: str = "train") -> tuple[str, ...]:
    """The core sentences of `kind` in one phrasing set ("train" or "new")."""
    if phrasings not in _CORES:
        raise ValueError(f"unknown phrasing set {phrasings!r}; choose from {', '.join(PHRASINGS)}")
    return _CORES[phrasings][kind]


def template_words() -> frozenset[str]:
    """Every word any phrasing (either set) or number form uses: operands avoid them so a prompt stays unambiguous."""
    texts = [core for table in _CORES.values() for kind_cores in table.values() for core in kind_cores]
    texts += ["please could you can times twice once", *NUMBER_WORDS.values()]
    return frozenset(w.strip("{}:?.,'!").lower() for text in texts for w in re.split(r"[\s']", text) if w)


def times(rng: random.Random, count: int) -> str:
    """repeat's count as a person writes it: "3 times", "three times" or, for 2, "twice"."""
    form = rng.random()
    if count == 2 and form < 0.2:
        return "twice"
    return f"{NUMBER_WORDS[count] if form < 0.6 and count in NUMBER_WORDS else count} times"


def _is_question(core: str) -> bool:
    return core.split()[0].rstrip("'s") in QUESTION_OPENERS or core.startswith("What's")


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def phrase(rng: random.Random, kind: str, phrasings: str = "train", **fields: object) -> str:
    """A prompt for `kind`: a core from the set, a polite form or none, and closing punctuation or none.

    A copied sentence keeps its own ending (punctuation after it would change what is copied), and a list
    at the end never gets ", please" (it would read as one more word).
    """
    template = rng.choice(cores(kind, phrasings))
    core, form = template.format(**fields), rng.random()
    if "{sentence}" in template:
        return f"Please {_lower_first(core)}" if form < 0.15 else core
    if _is_question(template):
        return core + ("?" if form < 0.7 else "")
    if form < 0.15:
        return f"Please {_lower_first(core)}" + rng.choice((".", ""))
    if form < 0.3:
        return f"{rng.choice(('Could you', 'Can you'))} {_lower_first(core)}" + rng.choice(("?", ""))
    if form < 0.4 and "{words}" not in template:
        return core + ", please."
    return core + rng.choice((".", ".", "", "!"))
