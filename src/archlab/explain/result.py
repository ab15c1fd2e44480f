"""What `explain` returns: the arrays it computed and the pictures it drew of them."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from archlab.explain.class_model import ClassModel
from archlab.explain.deconv import Projections
from archlab.explain.errors import ErrorAnalysis
from archlab.explain.maps import Attribution
from archlab.explain.positions import AttentionDistance
from archlab.explain.subject import Subject
from archlab.explain.units import Filters, TopPatches


@dataclass
class Picture:
    file: str          # relative to the output folder
    kind: str          # filters, patches, deconv, attribution, attention, class_model,
    #                    pos_embedding, attention_distance, confusion, top_losses
    title: str
    caption: str


@dataclass
class Explanation:
    subject: Subject
    methods: list[str]
    filters: Filters | None = None
    patches: dict[str, TopPatches] = field(default_factory=dict)
    deconv: dict[str, Projections] = field(default_factory=dict)
    deconv_patches: dict[str, TopPatches] = field(default_factory=dict)   # what they project
    attributions: list[Attribution] = field(default_factory=list)
    class_models: list[ClassModel] = field(default_factory=list)
    position_similarity: np.ndarray | None = None   # (rows, cols, rows, cols) cosine
    attention_distance: AttentionDistance | None = None
    errors: ErrorAnalysis | None = None
    pictures: list[Picture] = field(default_factory=list)
    out_dir: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def html(self) -> Path | None:
        return self.out_dir / "index.html" if self.out_dir else None
