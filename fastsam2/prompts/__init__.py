"""Prompts for SAM2: automatic ones (box, click, caption, phrase) when the user gives none.

Public entry points (each module docstring says why it works the way it does):

- :func:`auto.propose_prompts`: every object's box and click for one video (RPN
  proposals, :mod:`multi` selection, :mod:`grounding` when a phrase picks them);
- :func:`auto.caption_prompts`: every object's caption and phrase, for a batch of videos
  in one captioner call (:func:`captioners.make_captioner`: ``vllm``, ``openai``,
  ``transformers``; :func:`refine.refine_caption` for the phrase).

The pipeline's propose and caption stages are these two functions; so is any
other caller. What they decide travels on the task (:class:`fastsam2.config.VideoTask`,
one :class:`~fastsam2.config.ObjectPrompt` per object), and
:mod:`fastsam2.labeling` turns it into ``objects/`` and ``videos/`` rows.

Submodules are imported on use so that ``import fastsam2.prompts`` stays light.
"""
