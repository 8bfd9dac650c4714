"""Weights and config files, read and written without torch: one module per format.

    torch_archive.py   PyTorch zip archives (torch.save, TorchScript): reader with a
                       restricted unpickler, and a writer (save_torch_state_dict)
    safetensors.py     .safetensors reader (header validated first) and writer
    huggingface.py     Hugging Face CLIPModel names, config.json, tokenizer files, export_hf
    openclip.py        OpenCLIP's open_clip_config.json (model_cfg, preprocess_cfg)
    npz.py             what a .npz (a miniclip checkpoint) declares, before it is read
    config_json.py     the one typed reader of JSON config files (names file and key)
    checks.py          CheckpointError and the checks every weights file passes

miniclip.pretrained.load() dispatches over them.
"""
