"""Prompts for SAM2: automatic ones (box, click, caption, phrase) when the user gives none.

Public entry points (each module docstring says why it works the way it does):

- :class:`fastsam2.models.detector.ProposalModel` and :func:`proposals.pick_box`: the box;
- :class:`click.CoarseMasker` and :func:`click.representative_click`: the click;
- :func:`caption.make_captioner` (backends ``vllm``, ``openai``, ``transformers``): the caption;
- :func:`refine.refine_caption`: the phrase;
- :func:`auto.make_auto_prompt`: all of it for one video, user values winning.

Submodules are imported on use so that ``import fastsam2.prompts`` stays light.
"""
