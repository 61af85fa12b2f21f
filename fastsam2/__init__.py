"""fastsam2-batch: auto-label video datasets with SAM2 at dataset scale.

The library does the work; Ray only moves it. Every step is a plain function or
class importable without Ray; ``fastsam2.stages`` wraps them for Ray Data and
``fastsam2.pipeline`` wires the stages.
"""

__version__ = "0.1.0"
