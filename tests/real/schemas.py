"""Twenty bounded JSON Schemas, each with a prompt that fits it, for the real-engine tests and bench.

Bounded (string lengths, item counts, enums, number ranges) so that a small model under a grammar
stops: a grammar only ends when the value closes. Between them they cover nested objects, arrays
with minItems/maxItems, enums, integer ranges, anyOf, `$defs`/`$ref`, and non-object roots.
"""

from __future__ import annotations

from typing import Any

NAME = {"type": "string", "minLength": 1, "maxLength": 24}
SHORT = {"type": "string", "minLength": 1, "maxLength": 40}


def _object(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required or list(properties),
            "additionalProperties": False, **extra}


SCHEMAS: list[tuple[str, dict[str, Any], str]] = [
    ("person", _object({"name": NAME, "age": {"type": "integer", "minimum": 0, "maximum": 120}, "city": NAME}),
     "Extract the person: Alice is 30 years old and lives in Paris."),
    ("boolean_flag", _object({"is_question": {"type": "boolean"}}),
     "Is this sentence a question? 'Where is the station?'"),
    ("sentiment_enum", _object({"sentiment": {"enum": ["positive", "negative", "neutral"]}}),
     "Classify the sentiment: 'I love this phone, it is wonderful.'"),
    ("rating_range", _object({"stars": {"type": "integer", "minimum": 1, "maximum": 5}, "summary": SHORT}),
     "Rate this review from 1 to 5 stars and summarise it: 'Great food, slow service.'"),
    ("tags_array", _object({"tags": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 15},
                                     "minItems": 1, "maxItems": 3}}),
     "Give up to three tags for an article about electric cars."),
    ("nested_address", _object({"name": NAME, "address": _object({
        "street": SHORT, "city": NAME, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}})}),
     "Extract: Bob lives at 12 Oak Street, Springfield 12345."),
    ("number_bounds", _object({"celsius": {"type": "number", "minimum": -50, "maximum": 60}}),
     "The weather report says it is 21.5 degrees Celsius. What is the temperature?"),
    ("list_of_objects", _object({"items": {"type": "array", "minItems": 2, "maxItems": 3,
                                           "items": _object({"name": NAME, "qty": {"type": "integer", "minimum": 1,
                                                                                   "maximum": 20}})}}),
     "List the shopping: 2 apples, 3 pears and 1 melon."),
    ("any_of", _object({"answer": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 100},
                                             {"enum": ["unknown"]}]}}),
     "How many legs does a spider have? Answer with a number or 'unknown'."),
    ("defs_ref", {"$defs": {"point": _object({"x": {"type": "integer", "minimum": -10, "maximum": 10},
                                              "y": {"type": "integer", "minimum": -10, "maximum": 10}})},
                  **_object({"start": {"$ref": "#/$defs/point"}, "end": {"$ref": "#/$defs/point"}})},
     "A line goes from (1, 2) to (4, 6). Give its start and end points."),
    ("root_array", {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 100},
                    "minItems": 3, "maxItems": 3},
     "List the first three even numbers greater than zero."),
    ("root_enum", {"enum": ["red", "green", "blue"]}, "What colour is the sky on a clear day?"),
    ("root_integer", {"type": "integer", "minimum": 0, "maximum": 1000}, "How many days are there in a year?"),
    ("root_string", {"type": "string", "minLength": 2, "maxLength": 30}, "What is the capital of France?"),
    ("optional_field", _object({"title": SHORT, "subtitle": SHORT}, required=["title"]),
     "Give a title for a story about a lost dog."),
    ("nullable", _object({"middle_name": {"anyOf": [NAME, {"type": "null"}]}, "first_name": NAME}),
     "Extract the names: John Smith (no middle name)."),
    ("const_version", _object({"version": {"const": 1}, "status": {"enum": ["ok", "error"]}}),
     "Report status ok for version 1."),
    ("matrix", _object({"rows": {"type": "array", "minItems": 2, "maxItems": 2,
                                 "items": {"type": "array", "minItems": 2, "maxItems": 2,
                                           "items": {"type": "integer", "minimum": 0, "maximum": 9}}}}),
     "Write the 2x2 identity matrix."),
    ("event", _object({"title": SHORT, "day": {"enum": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
                       "hour": {"type": "integer", "minimum": 0, "maximum": 23},
                       "attendees": {"type": "array", "items": NAME, "maxItems": 3}}),
     "Extract the event: Team lunch on Friday at 12 with Ann and Raj."),
    ("deep_nesting", _object({"order": _object({"id": {"type": "integer", "minimum": 1, "maximum": 99999},
                                                "customer": _object({"name": NAME,
                                                                     "vip": {"type": "boolean"}})})}),
     "Order 42 was placed by Carla, who is a VIP customer."),
]

assert len(SCHEMAS) == 20 and len({name for name, _, _ in SCHEMAS}) == 20
