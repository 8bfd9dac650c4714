"""The one reader of JSON config files (Hugging Face's config.json, OpenCLIP's
open_clip_config.json): every value is checked for its type and range as it
is read, and every refusal names the file and the key.

    cfg = ConfigJSON.read("folder/config.json")
    text = cfg.section("text_config")                       # {} when absent
    heads = text.integer("num_attention_heads", default=8, low=1)
    # a bad value: CheckpointError("folder/config.json: text_config.num_attention_heads
    #               = null: must be an integer >= 1")

JSON's own types meet Python's loosely (`true` is an int to Python, NaN is
accepted by json.loads), so the checks here are exact: an integer is a JSON
integer, a number is finite, a section is an object.
"""
import json
import math

from miniclip.fileio import read_bounded
from miniclip.formats.checks import CheckpointError

# A CLIP config.json is a few kilobytes; nothing called a config is larger than this.
MAX_CONFIG_BYTES = 10_000_000

REQUIRED = object()     # the default of a key that must be present


def json_type(value):
    """The JSON name of a parsed value's type, for messages."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
             int: "integer", float: "number"}
    return names.get(type(value), type(value).__name__)


class ConfigJSON:
    """One JSON object of a config file, read key by key.

    path: the file (named in every error); value: the parsed object;
    where: the dotted path of this object inside the file ('' for the top).
    """

    def __init__(self, path, value, where=""):
        self.path, self.value, self.where = path, value, where
        if not isinstance(value, dict):
            what = f"{where.rstrip('.')}" if where else "the file"
            raise CheckpointError(f"{path}: {what} is a JSON {json_type(value)}, not an object "
                                  f"{{\"key\": value, ...}}: not a model config, or damaged")

    @classmethod
    def read(cls, path):
        """Parse the file (at most MAX_CONFIG_BYTES) -> ConfigJSON of its top-level object."""
        try:
            raw = read_bounded(path, MAX_CONFIG_BYTES, "config file")
            value = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as e:     # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise CheckpointError(f"{path} is not a readable JSON config ({e})") from None
        return cls(path, value)

    def __contains__(self, key):
        return key in self.value

    def bad(self, key, problem):
        """A CheckpointError naming the file and the dotted key."""
        return CheckpointError(f"{self.path}: {self.where}{key} = {json.dumps(self.value[key])}: {problem}")

    def get(self, key, default=REQUIRED):
        """The raw value (no check), or default; a missing required key names the file."""
        if key in self.value:
            return self.value[key]
        if default is REQUIRED:
            raise CheckpointError(f"{self.path}: missing key {self.where}{key}: not a complete model config")
        return default

    def section(self, key):
        """The object under `key` as a ConfigJSON ({} when absent or null)."""
        value = self.value.get(key)
        return ConfigJSON(self.path, {} if value is None else value, f"{self.where}{key}.")

    def integer(self, key, default=REQUIRED, low=None, high=None):
        """A JSON integer (not true/false, not 2.5) with low <= value <= high."""
        value = self.get(key, default)
        if key not in self.value:
            return value
        if type(value) is not int or (low is not None and value < low) or (high is not None and value > high):
            bounds = (f" from {low} to {high}" if low is not None and high is not None
                      else f" >= {low}" if low is not None else f" <= {high}" if high is not None else "")
            raise self.bad(key, f"must be an integer{bounds}")
        return value

    def number(self, key, default=REQUIRED, low=None, high=None, positive=False):
        """A finite JSON number (integer or not, never true/false/NaN/Infinity) in range;
        positive=True: > 0."""
        value = self.get(key, default)
        if key not in self.value:
            return value
        ok = type(value) in (int, float) and math.isfinite(value)
        ok = ok and (low is None or value >= low) and (high is None or value <= high) and (not positive or value > 0)
        if not ok:
            rule = ("a positive number" if positive else "a finite number")
            rule += f" >= {low}" if low is not None else ""
            rule += f" <= {high}" if high is not None else ""
            raise self.bad(key, f"must be {rule}")
        return value

    def string(self, key, default=REQUIRED, choices=None):
        """A JSON string, one of `choices` when given."""
        value = self.get(key, default)
        if key not in self.value:
            return value
        if not isinstance(value, str) or (choices is not None and value not in choices):
            rule = f"one of {', '.join(map(repr, choices))}" if choices is not None else "a string"
            raise self.bad(key, f"must be {rule}")
        return value

    def boolean(self, key, default=REQUIRED):
        """A JSON true or false."""
        value = self.get(key, default)
        if key in self.value and not isinstance(value, bool):
            raise self.bad(key, "must be true or false")
        return value

    def numbers(self, key, length, default=REQUIRED, positive=False):
        """A JSON array of `length` finite numbers (each > 0 when positive) -> tuple."""
        value = self.get(key, default)
        if key not in self.value:
            return value
        ok = isinstance(value, list) and len(value) == length and all(
            type(v) in (int, float) and math.isfinite(v) and (not positive or v > 0) for v in value)
        if not ok:
            kind = "positive numbers" if positive else "finite numbers"
            raise self.bad(key, f"must be an array of {length} {kind}")
        return tuple(float(v) for v in value)
