"""raynas: neural architecture search for object detectors, orchestrated on Ray.

Two searches live here: OPANAS (one-shot search of the FPN neck, ``raynas.spaces.opanas``) and
FAD / RepShare (differentiable search of one-stage detection heads, ``raynas.spaces.fad``).
"""

__version__ = "0.1.0"
