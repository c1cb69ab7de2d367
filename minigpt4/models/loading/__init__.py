"""Loading a MiniGPT-4 model's weights, apart from the network's modules; one job per module:

- :mod:`~minigpt4.models.loading.sources`: finding the files a config names (local paths, the
  torch hub cache for URLs, downloads only when allowed) and the preflight that reports every
  missing one before anything heavy is loaded;
- :mod:`~minigpt4.models.loading.reading`: reading a weight file safely (safetensors or a
  ``weights_only`` pickle);
- :mod:`~minigpt4.models.loading.strict_copy`: the one strict, shape-checked copy into a module;
- :mod:`~minigpt4.models.loading.key_maps`: each file's key layout and its mapping to the
  modules (EVA ViT, BLIP-2 Q-Former, released and training checkpoints);
- :mod:`~minigpt4.models.loading.parts`: the vision parts and a MiniGPT-4 checkpoint into a
  built model;
- :mod:`~minigpt4.models.loading.llm`: the LLM and its tokenizer;
- :mod:`~minigpt4.models.loading.quantized`: bitsandbytes LLMs (load arguments, log noise, the
  4-bit CPU kernel's layout);
- :mod:`~minigpt4.models.loading.writing`: writing the real layouts;
- :mod:`~minigpt4.models.loading.model`: a whole model, in the original's order.

:mod:`minigpt4.models.weights` re-exports the names that were there before.
"""
