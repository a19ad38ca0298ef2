"""The default pre-training corpus: English prose that ships with every Python installation.

A fresh clone with no network must still pre-train on real text, and we may not commit third-party
prose, so the corpus is built on the fly from the running interpreter:

1. the documentation topics behind `help()` (`pydoc_data.topics`), one document per topic;
2. the standard library's docstrings and comment blocks, read by parsing its `.py` files with `ast`
   (never importing them: `antigravity` opens a browser, `this` prints a poem), one document per
   module, pieces in source order, each docstring headed by its qualified name;
3. the docstrings of the built-in functions and types, which are already loaded in every process.

The same installation always gives the same bytes; `builtin_fingerprint()` names them for caches.
"""

from __future__ import annotations

import ast
import builtins
import functools
import hashlib
import inspect
import os
import re
import sys
import sysconfig
import warnings

# Test suites are code about code; encodings/ is generated codec tables; pydoc_data is source 1.
SKIPPED_DIRS = frozenset({
    "test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
    "encodings", "pydoc_data", "lib-dynload",
})
MIN_PIECE_WORDS = 5  # drops "Return self.", "Internal function." and other non-explanations
MIN_MODULE_DOCSTRING_WORDS = 2  # it titles its document: "Text wrapping and filling."
MIN_COMMENT_WORDS = 8  # comments are terser than docstrings; short ones are mostly labels
MIN_WRAPPED_LINE_CHARS = 40  # docstrings wrap near 72 columns; list items are shorter
MAX_NON_ASCII_FRACTION = 0.02
MIN_LETTER_FRACTION = 0.7  # letters and spaces over all characters; code and tables fall below
# Matched against lowercased text: four times faster than re.IGNORECASE.
LICENSE_WORDS = re.compile(
    r"copyright|licen[cs]e|all rights reserved|warranty|permission to use|redistribut")
# Typographic characters the docs use, spelt in ASCII so that the text stays ASCII-mostly.
TYPOGRAPHY = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "--",
    "\u2026": "...", "\u00a0": " ", "\u2022": "*", "\u2212": "-", "\f": "\n", "\v": "\n",
})
STATEMENT_LISTS = ("body", "handlers", "orelse", "finalbody", "cases")  # source order
NOT_LETTER = re.compile(r"[^A-Za-z ]")
# A line of code (commented out, or an example in a docstring): a statement opening a block,
# an import, an assignment or a comparison.
CODE_LINE = re.compile(r"(>>>|@\w|from \S+ import |import [\w.]+(, [\w.]+)*$"
                       r"|(def|class|if|elif|else|for|while|with|try|except|finally)\b.*:$"
                       r"|[\w.\[\]'\"]+\s*([-+*/|&]?=|==)\s*\S)")
SEPARATOR_LINE = re.compile(r"^\s*([-=*#~^+_.])\1{2,}\s*$")  # reST underlines, comment rulers
BULLET = re.compile(r"([-*+]|\d+\.|\(?[a-z\d]\))\s+")  # "* item", "2. item", "(a) item"
SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
# a whole lowercase word: not part of an identifier, a dotted name or a call
PLAIN_WORD = re.compile(r"(?<![\w.])[a-z]{3,8}(?![\w(])")
FUNCTION_WORDS = frozenset("""
    the and for that are with not this from will can which all when only should have but use may any
    other has then its was also there into than where they each after before does some don been see
    just here such them their these those what who whom whose how why would could shall might must
    very more most less least many much few own same both either neither nor yet too out off over
    under again once further while until because about above below between through during without
    within upon onto our your you his her him she one two three first last none true false
""".split())
PLAIN_SENTENCE = re.compile(r"[A-Z][A-Za-z0-9 ,;'-]*[A-Za-z0-9]\.")  # one final '.', no code


def builtin_documents() -> list[str]:
    """The whole corpus, one string per topic or module, in a fixed order.

    Returns a fresh list each call; the build itself happens once per process.
    """
    return list(_documents())


def builtin_fingerprint() -> str:
    """A 16-hex-digit digest of the corpus text and the interpreter version.

    Two processes get the same value exactly when `builtin_documents()` gives them the same text,
    so a caller can key cached token files on it.
    """
    return _fingerprint()


def builtin_sentences(
    min_words: int = 4, max_words: int = 14, limit: int | None = None,
) -> list[str]:
    """Plain English sentences from the corpus: ASCII, capitalised, ending in one '.', no code.

    Only letters, digits, spaces and `,;'-` occur inside, so no `()`, `=`, `_` or `>>>`.
    Sentences keep corpus order, each appears once, and `limit` keeps the first `limit` of them.
    """
    if min_words < 1 or max_words < min_words or (limit is not None and limit < 0):
        raise ValueError(f"builtin_sentences: need 1 <= min_words <= max_words and limit >= 0, got "
                         f"min_words={min_words}, max_words={max_words}, limit={limit}")
    sentences = _sentences(min_words, max_words)
    return list(sentences if limit is None else sentences[:limit])


@functools.lru_cache(maxsize=1)
def builtin_word_counts() -> tuple[tuple[str, int], ...]:
    """(word, occurrences) for every plain lowercase word of 3 to 8 letters but the function words, most frequent first."""
    counts: dict[str, int] = {}
    for document in _documents():
        for word in PLAIN_WORD.findall(document):
            counts[word] = counts.get(word, 0) + 1
    # ties broken alphabetically so the order never depends on dict or hash order
    ranked = sorted(counts, key=lambda w: (-counts[w], w))
    return tuple((w, counts[w]) for w in ranked if w not in FUNCTION_WORDS)


@functools.lru_cache(maxsize=1)
def _documents() -> tuple[str, ...]:
    seen: set[str] = set()  # pieces already used: stdlib docstrings repeat across classes
    documents = [*_topic_documents(seen), *_stdlib_documents(seen), *_builtin_type_documents(seen)]
    unique = dict.fromkeys(doc for doc in documents if doc)  # dict keeps first-seen order
    return tuple(unique)


@functools.lru_cache(maxsize=1)
def _fingerprint() -> str:
    digest = hashlib.sha256(sys.version.encode())
    for document in _documents():
        digest.update(b"\0" + document.encode("utf-8"))
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=8)
def _sentences(min_words: int, max_words: int) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for document in _documents():
        # Prose paragraphs are reflowed onto one line, so a sentence never spans a line break.
        for line in document.splitlines():
            for sentence in SENTENCE_BREAK.split(line.strip()):
                words = len(sentence.split())
                if min_words <= words <= max_words and PLAIN_SENTENCE.fullmatch(sentence):
                    found.setdefault(sentence)
    return tuple(found)


# --- source 1: pydoc topics -------------------------------------------------------------------

def _topic_documents(seen: set[str]) -> list[str]:
    try:
        from pydoc_data.topics import topics  # plain data, no side effects; absent in a few distros
    except ImportError:
        return []
    return [_clean_piece(topics[name], seen, MIN_PIECE_WORDS) for name in sorted(topics)]


# --- source 2: stdlib docstrings and comments ---------------------------------------------------

def _stdlib_documents(seen: set[str]) -> list[str]:
    root = sysconfig.get_paths()["stdlib"]
    documents = []
    for relative_path in _stdlib_files(root):
        with open(os.path.join(root, relative_path), "rb") as source_file:
            source = source_file.read()
        tree = _parse(source)
        if tree is not None:
            documents.append(_module_document(_module_name(relative_path), tree, source, seen))
    return documents


def _stdlib_files(root: str) -> list[str]:
    """Relative paths of the stdlib's .py files outside SKIPPED_DIRS, sorted as '/'-paths."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders
                         if name not in SKIPPED_DIRS and not name.startswith("config-")]
        relative_folder = os.path.relpath(folder, root)
        found += [os.path.normpath(os.path.join(relative_folder, name))
                  for name in files if name.endswith(".py")]
    return sorted(found, key=lambda path: path.replace(os.sep, "/"))


def _module_name(relative_path: str) -> str:
    parts = relative_path[: -len(".py")].split(os.sep)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def _parse(source: bytes) -> ast.Module | None:
    with warnings.catch_warnings():  # invalid-escape SyntaxWarnings in old modules are not ours
        warnings.simplefilter("ignore")
        try:
            return ast.parse(source)
        except (SyntaxError, ValueError, RecursionError):  # ValueError: null bytes, bad encoding
            return None


def _module_document(module_name: str, tree: ast.Module, source: bytes, seen: set[str]) -> str:
    """Docstrings (headed by qualified name) and comment blocks of one module, in source order."""
    pieces: list[tuple[int, str]] = []
    docstring_lines: set[int] = set()
    for line, heading, node in _documented_nodes(tree, module_name):
        docstring = node.body[0]  # so the comment scan skips '#' lines inside the docstring
        docstring_lines.update(range(docstring.lineno, docstring.end_lineno + 1))
        min_words = MIN_MODULE_DOCSTRING_WORDS if node is tree else MIN_PIECE_WORDS
        text = _clean_piece(ast.get_docstring(node, clean=True) or "", seen, min_words)
        if text:
            pieces.append((line, f"{heading}:\n{text}"))
    text_lines = source.decode("utf-8", errors="replace").splitlines()
    for line, comment in _comment_blocks(text_lines, docstring_lines):
        text = _clean_piece(comment, seen, MIN_COMMENT_WORDS)
        if text:
            pieces.append((line, text))
    pieces.sort(key=lambda piece: piece[0])  # stable: a docstring precedes a comment on its line
    return "\n\n".join(text for _, text in pieces)


def _documented_nodes(tree: ast.Module, module_name: str) -> list[tuple[int, str, ast.AST]]:
    """(line, qualified name, node) for the module and every class or function with a docstring."""
    found: list[tuple[int, str, ast.AST]] = []
    if ast.get_docstring(tree, clean=False) is not None:
        found.append((0, module_name, tree))
    _collect_definitions(tree.body, "", found)
    return found


def _collect_definitions(statements: list[ast.AST], prefix: str, found: list) -> None:
    # Definitions live only in statement lists, so expressions are never walked: that is most
    # of the tree, and walking it cost as much as parsing.
    for statement in statements:
        if isinstance(statement, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            name = prefix + statement.name
            if ast.get_docstring(statement, clean=False) is not None:
                found.append((statement.lineno, name, statement))
            _collect_definitions(statement.body, name + ".", found)
            continue
        for field in STATEMENT_LISTS:  # if/for/while/with/try bodies, except handlers, match cases
            inner = getattr(statement, field, None)
            if inner:
                _collect_definitions(inner, prefix, found)


def _comment_blocks(lines: list[str], skipped_lines: set[int]) -> list[tuple[int, str]]:
    """(first line, text) of each run of whole-line comments, ruler lines splitting runs."""
    blocks: list[tuple[int, str]] = []
    current: list[str] = []
    start = 0
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        text = stripped.lstrip("#").strip()
        is_prose_comment = (stripped.startswith("#") and number not in skipped_lines
                            and not stripped.startswith(("#!", "# -*-"))
                            and not SEPARATOR_LINE.match(stripped) and not CODE_LINE.match(text))
        if is_prose_comment:
            start = start if current else number
            current.append(text)
        elif current:
            blocks.append((start, "\n".join(current)))
            current = []
    if current:
        blocks.append((start, "\n".join(current)))
    return blocks


# --- source 3: built-in functions and types -----------------------------------------------------

def _builtin_type_documents(seen: set[str]) -> list[str]:
    """One document for `builtins`: each public callable's docstring, then its methods'."""
    pieces = []
    for name in sorted(vars(builtins)):
        value = getattr(builtins, name)
        # site.py and shells (IPython, gettext.install) add names to builtins; keep only the core.
        # Constants (True, None, Ellipsis) would only repeat their type's docstring.
        is_core = callable(value) and getattr(value, "__module__", None) == "builtins"
        if name.startswith("_") or not is_core:
            continue
        pieces.append(_headed(name, getattr(value, "__doc__", None), seen))
        if isinstance(value, type):
            # Dunder members say "Return self+value." or repeat the class docstring; skip them.
            pieces += [_headed(f"{name}.{member}", getattr(attribute, "__doc__", None), seen)
                       for member, attribute in sorted(vars(value).items())
                       if not member.startswith("_")]
    return ["\n\n".join(piece for piece in pieces if piece)]


def _headed(heading: str, docstring: object, seen: set[str]) -> str:
    if not isinstance(docstring, str):
        return ""
    text = _clean_piece(inspect.cleandoc(docstring), seen, MIN_PIECE_WORDS)  # as ast does
    return f"{heading}:\n{text}" if text else ""


# --- cleaning -----------------------------------------------------------------------------------

def _clean_piece(text: str, seen: set[str], min_words: int) -> str:
    """The prose paragraphs of a docstring, topic or comment; '' if too little or seen before."""
    text = text.translate(TYPOGRAPHY).replace("\r\n", "\n").replace("\r", "\n").expandtabs(8)
    paragraphs = [_clean_paragraph(block) for block in re.split(r"\n\s*\n", text)]
    cleaned = "\n\n".join(paragraph for paragraph in paragraphs if paragraph)
    if len(cleaned.split()) < min_words or cleaned in seen:
        return ""
    seen.add(cleaned)
    return cleaned


def _clean_paragraph(block: str) -> str:
    """A prose paragraph reflowed to one line; an indented block (list, grammar) dedented; or ''."""
    lines = [line.rstrip() for line in block.split("\n")
             if line.strip() and not SEPARATOR_LINE.match(line)]
    if not lines or not _is_prose("\n".join(lines)):
        return ""
    if any(line.lstrip().startswith((">>>", "...")) for line in lines):
        return ""  # doctest sessions: code and its output, not English
    indent = min(len(line) - len(line.lstrip()) for line in lines)
    lines = [line[indent:] for line in lines]
    if _is_flowing(lines):
        return " ".join(" ".join(lines).split())
    return "\n".join(lines)


def _is_flowing(lines: list[str]) -> bool:
    """True for wrapped prose: lines flush left (or hanging under a bullet) that fill the width.

    A list or table of short lines, or a code example, keeps its line breaks.
    """
    bullet = BULLET.match(lines[0])
    hang = len(bullet.group(0)) if bullet else 0
    return (all(len(line) - len(line.lstrip()) == hang for line in lines[1:])
            and all(len(line) >= MIN_WRAPPED_LINE_CHARS for line in lines[:-1])
            and not any(CODE_LINE.match(line.lstrip()) for line in lines))


def _is_prose(text: str) -> bool:
    text = " ".join(text.split())  # indentation is layout, not letters
    non_ascii = len(text) - len(text.encode("ascii", errors="ignore"))
    letters = len(NOT_LETTER.sub("", text))  # letters and spaces
    return (non_ascii <= MAX_NON_ASCII_FRACTION * len(text)
            and letters >= MIN_LETTER_FRACTION * len(text)
            and not LICENSE_WORDS.search(text.lower()))
