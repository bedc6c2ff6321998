"""The shipped list of common passwords and the check that refuses them at sign-up and password change."""

from __future__ import annotations

# Hand-written from the words and patterns that top every published breach list; variants are generated below so
# the list stays reviewable. Lower-case: the check compares case-folded input.
_BASE_WORDS: tuple[str, ...] = (
    # the classics
    "password", "passw0rd", "p@ssw0rd", "p@ssword", "pa55word", "passwort", "motdepasse", "contraseña",
    "secret", "letmein", "welcome", "welcome1", "changeme", "default", "guest", "login", "admin",
    "administrator", "root", "toor", "user", "test", "tester", "testing", "master", "access", "hello",
    "whatever", "nothing", "trustno1", "iloveyou", "loveyou", "lovely", "love", "freedom", "starwars",
    # keyboard walks and digit runs
    "qwerty", "qwertz", "azerty", "qwertyuiop", "qwertyui", "asdfgh", "asdfghjkl", "asdf", "zxcvbnm",
    "zxcvbn", "qazwsx", "qazwsxedc", "1qaz2wsx", "1qaz2wsx3edc", "zaq12wsx", "zaq1zaq1", "1q2w3e4r",
    "1q2w3e4r5t", "1q2w3e", "q1w2e3r4", "qwer1234", "asdf1234", "qwerty123", "abc123", "abcd1234",
    "abcdef", "abcdefg", "abcdefgh", "a1b2c3", "a1b2c3d4", "aaaaaa", "111111", "123123", "123321",
    "112233", "121212", "654321", "666666", "696969", "777777", "123456", "1234567", "12345678",
    "123456789", "1234567890", "0987654321", "987654321", "147258369", "159753", "password1",
    # names, pets, sports and pop culture
    "michael", "jennifer", "jessica", "ashley", "daniel", "thomas", "robert", "jordan", "jordan23",
    "charlie", "andrew", "joshua", "matthew", "hunter", "george", "summer", "ginger", "pepper", "buster",
    "maggie", "cookie", "monkey", "dragon", "tigger", "princess", "superman", "batman", "spiderman",
    "pokemon", "naruto", "minecraft", "fortnite", "football", "baseball", "basketball", "soccer", "hockey",
    "golfer", "yankees", "liverpool", "chelsea", "arsenal", "barcelona", "ferrari", "mercedes", "corvette",
    "mustang", "harley", "shadow", "sunshine", "rainbow", "flower", "butterfly", "silver", "orange",
    "purple", "computer", "internet", "samsung", "iphone", "google", "killer", "matrix", "ranger",
    "thunder", "diamond", "hannah", "midnight", "babygirl", "angel", "jesus", "blessed",
    "cheese", "chocolate", "banana", "secret123", "qwerty1", "sarang", "saranghae", "saranghaeyo",
    # this product and its domain
    "bullant", "bullants", "trading", "trader", "stocks", "stockmarket", "investing", "investor",
    "bitcoin", "ethereum", "crypto", "money", "moneymaker", "makemoney", "rich", "million", "millionaire",
    "dollars", "profit", "tothemoon", "hodl", "lambo", "kospi", "kosdaq", "nasdaq",
)  # fmt: skip

_SUFFIXES: tuple[str, ...] = (
    "", "1", "12", "123", "1234", "12345", "!", "1!", "123!", "2023", "2024", "2025", "2026", "@123", "#1",
)  # fmt: skip

# Rows as they appear on the keyboard, plus their reversals: people walk them in both directions.
_KEYBOARD_ROWS: tuple[str, ...] = (
    "`1234567890-=", "1234567890-=", "!@#$%^&*()_+", "!@#$%^&*()", "qwertyuiop[]", "qwertyuiop",
    "asdfghjkl;'", "asdfghjkl;", "zxcvbnm,./", "qwertyuiopasdfghjkl", "qwertyuiopasdfghjklzxcvbnm",
    "1qaz2wsx3edc", "1qaz2wsx3edc4rfv", "qazwsxedcrfv", "zaq12wsxcde3", "1q2w3e4r5t6y", "q1w2e3r4t5y6",
    "qwertzuiop", "azertyuiop", "asdfghjklzxcvbnm", "abcdefghij", "abcdefghijklmnop",
)  # fmt: skip

# Entries this short are rejected by the length rule before the list is consulted, so storing them buys nothing.
_MIN_STORED_LENGTH = 10
# A base word shorter than this, followed by random digits and symbols, is not an obvious pattern any more.
_MIN_PREFIX_WORD_LENGTH = 4


def _digit_runs() -> set[str]:
    """Ascending and descending runs of 10–16 digits that wrap around 9→0 (1234567890, 9876543210, ...)."""
    runs: set[str] = set()
    for start in range(10):
        for length in range(_MIN_STORED_LENGTH, 17):
            runs.add("".join(str((start + i) % 10) for i in range(length)))
            runs.add("".join(str((start - i) % 10) for i in range(length)))
    return runs


def _build_list() -> frozenset[str]:
    entries: set[str] = _digit_runs()
    for row in _KEYBOARD_ROWS:
        entries.update((row, row[::-1]))
    for word in _BASE_WORDS:
        entries.update(word + suffix for suffix in _SUFFIXES)
    return frozenset(entry for entry in entries if len(entry) >= _MIN_STORED_LENGTH)


COMMON_PASSWORDS: frozenset[str] = _build_list()
# Only words with letters qualify as prefixes: a digit run followed by more digits is just a long number, and the
# exact digit runs are already in COMMON_PASSWORDS.
_PREFIX_WORDS: tuple[str, ...] = tuple(
    w for w in dict.fromkeys(_BASE_WORDS) if len(w) >= _MIN_PREFIX_WORD_LENGTH and any(c.isalpha() for c in w)
)


def _is_word_plus_decoration(folded: str) -> bool:
    """True for a base word followed only by digits and symbols ("password2027!!", "qwerty99999")."""
    return any(folded.startswith(word) and not any(c.isalpha() for c in folded[len(word) :]) for word in _PREFIX_WORDS)


def is_common_password(password: str) -> bool:
    """True if `password` is on the shipped list or is a listed word dressed up with digits and symbols.

    Case-insensitive and blind to surrounding whitespace, so "  Password123! " counts as "password123!".
    """
    folded = password.strip().casefold()
    return folded in COMMON_PASSWORDS or _is_word_plus_decoration(folded)
