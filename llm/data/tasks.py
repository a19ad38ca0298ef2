"""Built-in instruction tasks a program can check: SFT examples, preference pairs, exact-match scoring.

The default pipeline must run with no download, so its instruction set is generated here. Each task is
small enough for a few-million-parameter GPT to learn in minutes, with easy and harder instances mixed
(one- and two-digit numbers, lists of 2 to 5 words) so accuracy after SFT is graded and leaves room for
RLHF to improve it.

Held-out split: an instance is "val" when the sha256 of its canonical content (kind + operands, never
the phrasing) is 0 mod 10, so a val instance never reaches train in any phrasing, whatever n or seed.
Generation is deterministic given (split, n, seed) and prefix-stable: the first k tasks of n > k are the
tasks of n = k. Instances are drawn with replacement, so kinds with small spaces repeat.
"""

import bisect
import functools
import hashlib
import itertools
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llm.data import phrasings
from llm.data.styles import parse_style
from llm.settings_checks import TASK_KINDS

SPLITS = ("train", "val")
VAL_BUCKETS = 10  # one instance in ten is held out

MAX_NUMBER = 49  # operands 0..49; half the draws stay single-digit so easy sums are common
MIN_LIST_WORDS, MAX_LIST_WORDS = 2, 5
MAX_COUNT_WORDS = 7  # counting has a tiny answer space; longer lists keep it from being a guess
MIN_REPEAT, MAX_REPEAT = 2, 5
MAX_COPY_WORDS = 12  # keeps prompt + answer well inside a 128-token context


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


COLOURS = _words("red blue green yellow black white brown pink orange purple grey gold silver")
ANIMALS = _words(
    "cat dog fox cow pig hen duck goat sheep horse mouse rat bat bee ant owl bird fish frog toad snake "
    "lion tiger bear wolf deer seal whale shark crab moth worm snail eagle hawk crow swan goose camel "
    "zebra monkey rabbit otter panda llama yak mule lamb puppy kitten parrot turkey spider beetle donkey "
    "pony calf chick"
)
FOODS = _words(
    "apple pear plum grape lemon lime peach melon cherry berry banana mango kiwi fig bread cake pie rice "
    "soup egg milk tea jam honey cheese corn bean pea salt sugar butter cookie pizza carrot onion potato "
    "tomato nut oat pasta candy toast juice"
)
OBJECTS = _words(
    "cup bowl plate spoon fork knife pan pot jar box bag hat cap coat shoe sock shirt belt ring key lock "
    "door bed chair desk table lamp clock book pen map card coin bell drum kite ball toy boat car bus "
    "train bike cart ship rope net brush comb soap towel mat rug fan phone window wall roof glass sofa "
    "pillow basket bucket candle mirror ladder hammer nail shelf fence gate tent sail wheel bottle "
    "button letter paper pencil stamp ticket wallet"
)
NATURE = _words(
    "sun moon star sky cloud rain snow wind storm hill rock stone sand sea lake river pond tree leaf rose "
    "grass seed root bush wood fire ice mud ocean island forest valley beach shell flower"
)
PLACES = _words(
    "home house farm town city park road shop school barn cave field garden bridge tower castle church "
    "market station library"
)
ADJECTIVES = _words(
    "big small old new tall short fast slow hot cold warm soft hard happy sad quiet loud dark bright wet "
    "dry clean kind brave funny lucky busy calm tiny huge sweet sour"
)
VERBS = _words(
    "see find like want take hold move pull push drop open carry bring watch paint wash fix build cook "
    "climb kick throw catch"
)

# Nouns and colours make list operands; the full vocabulary also feeds filler and wrong words.
LIST_WORDS = COLOURS + ANIMALS + FOODS + OBJECTS + NATURE + PLACES
WORDS = LIST_WORDS + ADJECTIVES + VERBS
EVERYDAY = frozenset(WORDS)

REJECTION_KINDS: tuple[str, ...] = (
    "off_by_one", "shuffled", "truncated", "ignores_instruction", "never_stops", "wrong_answer", "misspelled",
)
_NUMERIC_KINDS = frozenset({"add", "subtract", "count_words"})

_SENTENCE_TEMPLATES = (
    "the {adj} {animal} {verbs} the {thing}.",
    "the {animal} and the {animal2} {verb} the {thing}.",
    "my {thing} is {colour}.",
    "we {verb} the {adj} {thing} in the {place}.",
    "the {colour} {thing} is in the {place}.",
)


@dataclass(frozen=True)
class Task:
    kind: str  # one of TASK_KINDS
    prompt: str  # the user instruction
    answer: str  # the exact correct reply, already in normalize_reply form


@dataclass(frozen=True)
class TaskPair:
    task: Task
    chosen: str  # the correct reply
    rejected: str  # a plausible wrong reply; is_correct(task, rejected) is always False
    kind: str  # one of REJECTION_KINDS
    rejected_complete: bool  # False for "never_stops": render rejected WITHOUT the end-of-turn token


@dataclass(frozen=True)
class _Instance:
    """A task with its operands, which the rejection makers need and the prompt only spells out."""

    task: Task
    content: tuple  # canonical content: decides the split, never includes the phrasing
    words: tuple[str, ...] = ()  # input words (list kinds, repeat's word, copy's sentence)
    numbers: tuple[int, ...] = ()  # operands (add, subtract) or repeat's count


@dataclass(frozen=True)
class Vocabulary:
    """What instances are built from: list words (and how often each is drawn), sentences to copy, the largest
    operand, and the phrasing set prompts are asked in."""

    words: tuple[str, ...] = ()  # list operands and filler; () = the built-in word lists above
    sentences: tuple[str, ...] = ()  # copy sources of this split; () = synthetic sentences
    max_number: int = MAX_NUMBER
    weights: tuple[float, ...] = ()  # relative draw frequency of each of `words`; () = uniform
    phrasings: str = "train"  # llm/data/phrasings.py: "train", or "new" (held out from every training example)

    @property
    def list_words(self) -> tuple[str, ...]:
        return self.words or LIST_WORDS

    @property
    def filler(self) -> tuple[str, ...]:
        return self.words or WORDS

    @functools.cached_property
    def cumulative(self) -> tuple[float, ...]:
        return tuple(itertools.accumulate(self.weights))

    def draw(self, rng: random.Random, k: int) -> tuple[str, ...]:
        """k distinct list words, each drawn in proportion to its weight."""
        if not self.weights:
            return tuple(rng.sample(self.list_words, k))
        chosen: dict[str, None] = {}
        while len(chosen) < k:
            point = rng.random() * self.cumulative[-1]
            chosen[self.words[bisect.bisect_right(self.cumulative, point)]] = None
        return tuple(chosen)


# ---------------------------------------------------------------- scoring

def normalize_reply(text: str) -> str:
    """Strip surrounding whitespace and collapse inner runs to one space; nothing else.

    Case and punctuation count: SFT teaches the exact format, and leniency would let a truncated reply
    ("the cat sat" for "the cat sat.") or a wrong case pass as correct. Cutting the reply at the
    end-of-turn token is the generator's job, before this is called.
    """
    return " ".join(text.split())


def is_correct(task: Task, reply: str) -> bool:
    """The answer inside the reply's style (llm/data/styles.py) is the task's answer."""
    return normalize_reply(parse_style(reply)[1]) == normalize_reply(task.answer)


def exact_match(tasks: Sequence[Task], replies: Sequence[str]) -> dict:
    """{"accuracy", "n", "by_kind": {kind: accuracy}}; accuracy is 0.0 for no tasks (keeps logs JSON-valid)."""
    if len(tasks) != len(replies):
        raise ValueError(f"exact_match: {len(tasks)} tasks but {len(replies)} replies")
    total, right = Counter(), Counter()
    for task, reply in zip(tasks, replies):
        total[task.kind] += 1
        right[task.kind] += is_correct(task, reply)
    n = len(tasks)
    return {
        "accuracy": sum(right.values()) / n if n else 0.0,
        "n": n,
        "by_kind": {kind: right[kind] / total[kind] for kind in sorted(total)},
    }


# ---------------------------------------------------------------- instances

def _split_of(kind: str, content: tuple) -> str:
    # hashlib, not hash(): Python salts str hashes per process, which would reshuffle the split.
    digest = hashlib.sha256(json.dumps([kind, content]).encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") % VAL_BUCKETS == 0 else "train"


def _phrase(rng: random.Random, vocab: Vocabulary, kind: str, **fields: object) -> str:
    return phrasings.phrase(rng, kind, vocab.phrasings, **fields)


def _operand_pair(rng: random.Random, vocab: Vocabulary) -> tuple[int, int]:
    top = min(9, vocab.max_number) if rng.random() < 0.5 else vocab.max_number
    return rng.randint(0, top), rng.randint(0, top)


def _add(rng: random.Random, vocab: Vocabulary) -> _Instance:
    a, b = _operand_pair(rng, vocab)
    # Unordered content: "3 + 5" and "5 + 3" land in the same split, so val never tests a swapped train sum.
    return _Instance(Task("add", _phrase(rng, vocab, "add", a=a, b=b), str(a + b)), tuple(sorted((a, b))), numbers=(a, b))


def _subtract(rng: random.Random, vocab: Vocabulary) -> _Instance:
    a, b = sorted(_operand_pair(rng, vocab), reverse=True)  # a >= b: results are never negative
    return _Instance(Task("subtract", _phrase(rng, vocab, "subtract", a=a, b=b), str(a - b)), (a, b), numbers=(a, b))


def _list_kind(kind: str, answer_of: Callable[[tuple[str, ...]], str], max_words: int = MAX_LIST_WORDS,
               unordered: bool = False) -> Callable[[random.Random, Vocabulary], _Instance]:
    def generate(rng: random.Random, vocab: Vocabulary) -> _Instance:
        words = vocab.draw(rng, rng.randint(MIN_LIST_WORDS, max_words))  # distinct words
        content = tuple(sorted(words)) if unordered else words
        task = Task(kind, _phrase(rng, vocab, kind, words=" ".join(words)), answer_of(words))
        return _Instance(task, content, words=words)
    return generate


def _repeat(rng: random.Random, vocab: Vocabulary) -> _Instance:
    word, count = vocab.draw(rng, 1)[0], rng.randint(MIN_REPEAT, MAX_REPEAT)
    prompt = _phrase(rng, vocab, "repeat", word=word, times=phrasings.times(rng, count))
    task = Task("repeat", prompt, " ".join([word] * count))
    return _Instance(task, (word, count), words=(word,), numbers=(count,))


def _third_person(verb: str) -> str:
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + ("es" if verb.endswith(("s", "sh", "ch", "x", "o")) else "s")


def _synthetic_sentence(rng: random.Random) -> str:
    animal, animal2 = rng.sample(ANIMALS, 2)
    verb = rng.choice(VERBS)
    return rng.choice(_SENTENCE_TEMPLATES).format(
        adj=rng.choice(ADJECTIVES), animal=animal, animal2=animal2, verb=verb, verbs=_third_person(verb),
        thing=rng.choice(OBJECTS + FOODS), colour=rng.choice(COLOURS), place=rng.choice(PLACES))


def _copy(rng: random.Random, vocab: Vocabulary) -> _Instance:
    sentence = rng.choice(vocab.sentences) if vocab.sentences else _synthetic_sentence(rng)
    task = Task("copy", _phrase(rng, vocab, "copy", sentence=sentence), sentence)
    return _Instance(task, (sentence,), words=tuple(sentence.split()))


_GENERATORS: dict[str, Callable[[random.Random, Vocabulary], _Instance]] = {
    "add": _add,
    "subtract": _subtract,
    "reverse_words": _list_kind("reverse_words", lambda w: " ".join(reversed(w))),
    "sort_words": _list_kind("sort_words", lambda w: " ".join(sorted(w)), unordered=True),
    "count_words": _list_kind("count_words", lambda w: str(len(w)), max_words=MAX_COUNT_WORDS),
    "first_word": _list_kind("first_word", lambda w: w[0]),
    "last_word": _list_kind("last_word", lambda w: w[-1]),
    "uppercase": _list_kind("uppercase", lambda w: " ".join(w).upper(), max_words=4),
    "repeat": _repeat,
    "copy": _copy,
}
_MAX_DRAWS = 10_000  # a split holds ~10% of any space, so this only trips on a bug


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")


def _check_kinds(kinds: Sequence[str] | None) -> tuple[str, ...]:
    if kinds is None:
        return TASK_KINDS
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    if not kinds:
        raise ValueError(f"kinds is empty; choose from {', '.join(TASK_KINDS)}")
    for kind in kinds:
        if kind not in _GENERATORS:
            raise ValueError(f"unknown task kind {kind!r}; choose from {', '.join(TASK_KINDS)}")
    return kinds


def _copy_pool(sentences: Sequence[str], split: str) -> tuple[str, ...]:
    """The caller's sentences of 1..MAX_COPY_WORDS words that hash into `split`, whitespace-normalized."""
    usable = dict.fromkeys(s for s in map(normalize_reply, sentences) if 0 < len(s.split()) <= MAX_COPY_WORDS)
    pool = tuple(s for s in usable if _split_of("copy", (s,)) == split)
    if not pool:
        raise ValueError(
            f"copy: none of the {len(sentences)} sentences given (of 1 to {MAX_COPY_WORDS} words) falls in "
            f"split {split!r}; pass more sentences or leave 'copy' out of kinds")
    return pool


def _draw(kind: str, split: str, rng: random.Random, vocab: Vocabulary) -> _Instance:
    for _ in range(_MAX_DRAWS):
        instance = _GENERATORS[kind](rng, vocab)
        if _split_of(kind, instance.content) == split:
            return instance
    raise RuntimeError(f"{kind}: no {split!r} instance in {_MAX_DRAWS} draws")


def _vocabulary(split: str, kinds: tuple[str, ...], sentences: Sequence[str] | None, words: Sequence[str] | None,
                max_number: int | None, weights: Sequence[float] | None, phrasing_set: str) -> Vocabulary:
    if words is not None and len(set(words)) < MAX_COUNT_WORDS:
        raise ValueError(f"words: need at least {MAX_COUNT_WORDS} distinct words, got {len(set(words))}")
    if max_number is not None and max_number < 1:
        raise ValueError(f"max_number must be >= 1, got {max_number}")
    if weights is not None and (words is None or len(weights) != len(words) or len(set(words)) != len(words)
                                or min(weights) <= 0):
        raise ValueError("weights: need one positive weight for each of `words`, with no word repeated")
    phrasings.cores(kinds[0], phrasing_set)  # an unknown phrasing set fails here, with the sets' names
    pool = _copy_pool(sentences, split) if sentences is not None and "copy" in kinds else ()
    return Vocabulary(tuple(dict.fromkeys(words)) if words else (), pool, MAX_NUMBER if max_number is None else max_number,
                      tuple(weights) if weights is not None else (), phrasing_set)


def _make_instances(split: str, n: int, seed: int, kinds: Sequence[str] | None, sentences: Sequence[str] | None,
                    words: Sequence[str] | None = None, max_number: int | None = None,
                    weights: Sequence[float] | None = None, phrasing_set: str = "train") -> tuple[list[_Instance], Vocabulary]:
    _check_split(split)
    kinds = _check_kinds(kinds)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    vocab = _vocabulary(split, kinds, sentences, words, max_number, weights, phrasing_set)
    rng = random.Random(seed)
    instances: list[_Instance] = []
    while len(instances) < n:
        # Round-robin over kinds in a fresh order each round: balanced counts, mixed order, prefix-stable.
        for kind in rng.sample(kinds, len(kinds))[: n - len(instances)]:
            instances.append(_draw(kind, split, rng, vocab))
    return instances, vocab


def make_tasks(split: str, n: int, seed: int = 0, kinds: Sequence[str] | None = None,
               sentences: Sequence[str] | None = None, words: Sequence[str] | None = None,
               max_number: int | None = None, weights: Sequence[float] | None = None,
               phrasing_set: str = "train") -> list[Task]:
    """n tasks of `split` ("train" or "val"), kinds in turn.

    `sentences` feed `copy` (else synthetic ones); `words` replace the built-in word lists for list
    operands (pick words the model's tokenizer knows), drawn in proportion to `weights` (else uniformly);
    `max_number` bounds arithmetic operands; `phrasing_set` picks the phrasings prompts are asked in
    (llm/data/phrasings.py: "train", or "new", which no training example uses).
    """
    instances, _ = _make_instances(split, n, seed, kinds, sentences, words, max_number, weights, phrasing_set)
    return [instance.task for instance in instances]


# ---------------------------------------------------------------- preference pairs

def _off_by_one(inst: _Instance, rng: random.Random, vocab: Vocabulary) -> str | None:
    if inst.task.kind not in _NUMERIC_KINDS:
        return None
    value = int(inst.task.answer)
    return str(rng.choice([v for v in (value - 1, value + 1) if v >= 0]))


def _shuffled(inst: _Instance, rng: random.Random, vocab: Vocabulary) -> str | None:
    words = inst.task.answer.split()
    if len(set(words)) < 2:
        return None
    order = rng.sample(words, len(words))
    # A rotation differs from the original whenever two words differ: the fallback for an unlucky draw.
    return " ".join(order if order != words else words[1:] + words[:1])


def _truncated(inst: _Instance, rng: random.Random, vocab: Vocabulary) -> str | None:
    answer = inst.task.answer
    words = answer.split()
    if len(words) >= 2:
        return " ".join(words[: rng.randint(1, len(words) - 1)])
    if inst.task.kind in _NUMERIC_KINDS or len(answer) < 3:
        return None  # "1" for "12" is a wrong number, not a cut-off reply
    return answer[: rng.randint(2, len(answer) - 1)]


def _ignores_instruction(inst: _Instance, rng: random.Random, vocab: Vocabulary) -> str | None:
    """Echo the input, or answer as if it were a neighbouring task."""
    kind, words, numbers = inst.task.kind, inst.words, inst.numbers
    if kind == "add":
        return str(abs(numbers[0] - numbers[1]))  # subtracts instead
    if kind == "subtract":
        return str(numbers[0] + numbers[1])  # adds instead
    if kind == "first_word":
        return words[-1]
    if kind == "last_word":
        return words[0]
    if kind == "repeat":
        return words[0]
    if kind == "copy":
        return inst.task.answer.upper()  # answers as if it were `uppercase`
    return " ".join(words)  # the input unchanged


def _never_stops(inst: _Instance, rng: random.Random, vocab: Vocabulary) -> str | None:
    answer = inst.task.answer
    tail = answer if rng.random() < 0.5 else " ".join(rng.sample(vocab.filler, rng.randint(3, 6)))
    return f"{answer} {tail}"


def _replace_one_word(text: str, rng: random.Random, vocab: Vocabulary) -> str:
    parts = text.split()
    i = rng.randrange(len(parts))
    core = parts[i].rstrip(".,!?;:")
    parts[i] = rng.choice([w for w in vocab.list_words if w != core]) + parts[i][len(core):]  # keeps punctuation
    return " ".join(parts)


def _wrong_answer(inst: _Instance, rng: random.Random, vocab: Vocabulary) -> str | None:
    kind, answer = inst.task.kind, inst.task.answer
    if kind in _NUMERIC_KINDS:
        value = int(answer)
        return str(rng.choice([value + d for d in (-5, -4, -3, -2, 2, 3, 4, 5) if value + d >= 0]))
    if kind in ("first_word", "last_word"):
        return rng.choice([w for w in inst.words if w != answer])
    if kind == "repeat":
        return " ".join([inst.words[0]] * (inst.numbers[0] + 1))
    if kind == "uppercase":
        parts = answer.split()
        i = rng.randrange(len(parts))
        parts[i] = parts[i].lower() if len(parts) > 1 else parts[i].capitalize()
        return " ".join(parts)
    return _replace_one_word(answer, rng, vocab)  # reverse_words, sort_words, copy


def _misspell(word: str, rng: random.Random, vocab: Vocabulary, avoid: tuple[str, ...]) -> str | None:
    """The word with its ending swapped for the tail of another word ("doesn" -> "doises").

    This is the slip a policy sampling subword tokens makes, and a reward model that never saw one
    scored it above the right answer: PPO then learned to misspell (docs/design.md).
    """
    if len(word) < 3:
        return None
    donors = [w for w in vocab.filler if len(w) >= 3]
    for _ in range(8):
        donor = rng.choice(donors)
        spelled = word[: rng.randint(1, len(word) - 2)] + donor[rng.randint(1, len(donor) - 2):]
        spelled = spelled.upper() if word.isupper() else spelled
        if spelled != word and spelled.lower() not in vocab.filler and spelled.lower() not in EVERYDAY and spelled not in avoid:
            return spelled
    return None


def _misspelled(inst: _Instance, rng: random.Random, vocab: Vocabulary) -> str | None:
    if inst.task.kind in _NUMERIC_KINDS:
        return None
    parts = inst.task.answer.split()
    i = rng.randrange(len(parts))
    core = parts[i].rstrip(".,!?;:")
    spelled = _misspell(core, rng, vocab, inst.words)
    if spelled is None:
        return None
    parts[i] = spelled + parts[i][len(core):]  # keeps punctuation
    return " ".join(parts)


_REJECTORS: dict[str, Callable[[_Instance, random.Random, Vocabulary], str | None]] = {
    "off_by_one": _off_by_one,
    "shuffled": _shuffled,
    "truncated": _truncated,
    "ignores_instruction": _ignores_instruction,
    "never_stops": _never_stops,
    "wrong_answer": _wrong_answer,
    "misspelled": _misspelled,
}


def _brings_everyday_words(text: str, inst: _Instance, vocab: Vocabulary) -> bool:
    """A made-up reply that spells an everyday word the task never had ("fig" cut from "figure"): the built-in
    sets hold those words out of training (llm/data/builtin_tasks.py), so such a rejection is not made."""
    if not vocab.words:
        return False
    own = {w.lower() for w in inst.words}
    return any(w in EVERYDAY and w not in own for w in re.findall(r"[a-z]+", text.lower()))


def _make_pair(inst: _Instance, rng: random.Random, used: Counter, vocab: Vocabulary) -> TaskPair:
    options = {}
    for kind in REJECTION_KINDS:
        text = _REJECTORS[kind](inst, rng, vocab)
        # A maker may land on the answer (echoing an already sorted list): then it does not apply here.
        if text is not None and not is_correct(inst.task, text) and not _brings_everyday_words(text, inst, vocab):
            options[kind] = text
    fewest = min(used[kind] for kind in options)  # never_stops always applies, so options is never empty
    kind = rng.choice([k for k in options if used[k] == fewest])
    used[kind] += 1
    return TaskPair(inst.task, inst.task.answer, options[kind], kind, rejected_complete=kind != "never_stops")


def make_preference_pairs(split: str, n: int, seed: int = 0, sentences: Sequence[str] | None = None,
                          kinds: Sequence[str] | None = None, words: Sequence[str] | None = None,
                          max_number: int | None = None, weights: Sequence[float] | None = None,
                          phrasing_set: str = "train") -> list[TaskPair]:
    """Pairs over the tasks of make_tasks(split, n, seed, ...), rejection kinds balanced among those that apply."""
    rng = random.Random(f"pairs:{seed}")  # str seeds hash with sha512: stable across processes
    used: Counter = Counter()
    instances, vocab = _make_instances(split, n, seed, kinds, sentences, words, max_number, weights, phrasing_set)
    return [_make_pair(inst, rng, used, vocab) for inst in instances]
