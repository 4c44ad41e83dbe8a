"""Named schemas a caller can pass by name instead of writing the JSON Schema out.

They come from the image-generation pipeline this server was first built for: judging a
picture against the prompt that made it, and recovering a prompt from a picture.
"""

from __future__ import annotations

from typing import Any

_SCORE = {"type": "number", "minimum": 0, "maximum": 10}

PRESETS: dict[str, dict[str, Any]] = {
    "reverse_prompt": {
        "type": "object",
        "description": "A prompt that would reproduce the image, with a description and a score.",
        "properties": {
            "reverse_prompt": {"type": "string", "description": "A text-to-image prompt for this image."},
            "visual_description": {"type": "string", "description": "What the image shows."},
            "quality_score": {**_SCORE, "description": "Technical and aesthetic quality, 0 to 10."},
            "suggested_name": {
                "type": ["string", "null"],
                "description": "A short file-name-friendly title, or null.",
            },
        },
        "required": ["reverse_prompt", "visual_description", "quality_score", "suggested_name"],
        "additionalProperties": False,
    },
    "semantic_analysis": {
        "type": "object",
        "description": "How well a generated scene follows its manifest, and what is new in it.",
        "properties": {
            "manifest_adherence": {**_SCORE, "description": "How closely the scene follows the manifest."},
            "visual_quality": {**_SCORE, "description": "Technical and aesthetic quality."},
            "continuity_issues": {"type": "array", "items": {"type": "string"}},
            "new_entities_description": {
                "type": "array",
                "items": {"type": "object"},
                "description": "Entities that appear and were not in the manifest.",
            },
            "overall_scene_description": {"type": "string"},
        },
        "required": [
            "manifest_adherence",
            "visual_quality",
            "continuity_issues",
            "new_entities_description",
            "overall_scene_description",
        ],
        "additionalProperties": False,
    },
    "visual_prompt_score": {
        "type": "object",
        "description": "How good the image is, and how well it follows its prompt.",
        "properties": {
            "visual_quality": {**_SCORE, "description": "Technical and aesthetic quality."},
            "prompt_adherence": {**_SCORE, "description": "How closely the image follows the prompt."},
        },
        "required": ["visual_quality", "prompt_adherence"],
        "additionalProperties": False,
    },
}
