"""Tiny random models of every supported family, and an independent physical duplicate.

The duplicate is built without rys_search.runtime: a fresh config with the layer count and
per-layer entries rewritten, a fresh model, and each layer's weights deep-copied from its
source layer. It is the slow, obvious path the weight-shared runtime is checked against.
"""

from __future__ import annotations

import copy

import torch
from transformers import AutoConfig, AutoModelForCausalLM

COMMON = dict(
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    num_hidden_layers=6,
    vocab_size=128,
    max_position_embeddings=4096,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    tie_word_embeddings=False,
)

# Per family: what makes its layers differ from one another, so that a schedule that
# lost a layer's setting would show in the logits (sliding windows shorter than the prompts).
TINY = {
    "llama": dict(model_type="llama"),
    "mistral": dict(model_type="mistral", sliding_window=5),
    "qwen2": dict(model_type="qwen2", use_sliding_window=True, sliding_window=5, max_window_layers=3),
    "qwen3": dict(
        model_type="qwen3",
        layer_types=["full_attention", "sliding_attention"] * 3,
        use_sliding_window=True,
        sliding_window=5,
    ),
    "gemma3": dict(
        model_type="gemma3_text",
        sliding_window=5,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"] * 2,
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
        },
    ),
    "phi3": dict(model_type="phi3", sliding_window=5),
    "gemma2": dict(model_type="gemma2", sliding_window=5, query_pre_attn_scalar=16),  # layer_types: S, F, S, ...
    "olmo2": dict(model_type="olmo2"),
    "granite": dict(model_type="granite", embedding_multiplier=4.0, residual_multiplier=0.5,
                    attention_multiplier=0.125, logits_scaling=2.0),
    # MoE: 4 experts, 2 per token; Qwen MoE with dense layers among the expert ones (sparse step 2,
    # and layer 5 listed dense), so a schedule must carry each layer's kind into an exported config.
    "qwen2_moe": dict(
        model_type="qwen2_moe", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
        shared_expert_intermediate_size=48, decoder_sparse_step=2, mlp_only_layers=[5],
        use_sliding_window=True, sliding_window=5, max_window_layers=3,
    ),
    "qwen3_moe": dict(
        model_type="qwen3_moe", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
        mlp_only_layers=[2],
    ),
    "mixtral": dict(model_type="mixtral", num_local_experts=4, num_experts_per_tok=2, sliding_window=5),
    "gpt_oss": dict(model_type="gpt_oss", num_local_experts=4, num_experts_per_tok=2, intermediate_size=32,
                    sliding_window=5),  # layer_types: S, F, S, ...
}


# What a GGUF can say about these families: no sliding windows (but Gemma 2's, by position);
# transformers' GGUF reader assumes Qwen3's head size of 128, Gemma 2's query scale of 256, and
# the Qwen MoE expert sizes of its config defaults; llama.cpp gives every Qwen MoE layer experts
# and normalises Qwen3-MoE's routing weights.
GGUF_SAFE = {  # config overrides for a GGUF export's round trip, by family
    "llama": {},
    "mistral": {"sliding_window": None},  # (a mistral config with layer_types reloads as "ministral")
    "qwen2": {"sliding_window": None, "use_sliding_window": False, "layer_types": None},
    "qwen3": {"sliding_window": None, "use_sliding_window": False, "layer_types": None, "head_dim": 128},
    "phi3": {"sliding_window": None},
    "gemma2": {"tie_word_embeddings": True, "head_dim": 256, "query_pre_attn_scalar": 256},
    "qwen2_moe": {"mlp_only_layers": [], "decoder_sparse_step": 1, "use_sliding_window": False, "layer_types": None,
                  "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632},
    "qwen3_moe": {"mlp_only_layers": [], "norm_topk_prob": True, "moe_intermediate_size": 768},
    # GGUFs transformers does not read (rys-search's reader, ggufread, does)
    "granite": {},
    "mixtral": {"sliding_window": None},
    "olmo2": {},
    # YaRN with the correction range rounded, as llama.cpp runs it (gpt-oss's checkpoints say
    # truncate = false: see test_gpt_oss_yarn_without_truncation_is_exported_with_a_warning)
    "gpt_oss": {"rope_parameters": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                                    "truncate": True, "original_max_position_embeddings": 4096,
                                    "rope_theta": 150000.0}},
}


def tiny_config(family: str, **overrides):
    spec = dict(TINY[family])
    model_type = spec.pop("model_type")
    return AutoConfig.for_model(model_type, **{**COMMON, **spec, **overrides})


def tiny_model(family: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, **overrides), dtype=torch.float32)
    # Random init leaves norms at 1 and some weights tiny; perturb every tensor so that
    # each layer is distinct and a wrong layer order cannot hide.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def physically_duplicated(model, path, remap_layer_types=True):
    """A new model whose layer k is a deep copy of model's layer path[k].

    With remap_layer_types=False the copy keeps the config's layer types by position (what a
    runtime that forgot per-layer settings would do): used to show the tests can fail.
    MoE layer kinds (experts or a dense MLP) are read off the source's modules and written
    out as mlp_only_layers with a sparse step of 1, so each copy is built like its source.
    """
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(path)
    if getattr(config, "mlp_only_layers", None) is not None:
        experts = [hasattr(layer.mlp, "experts") for layer in model.model.layers]
        config.decoder_sparse_step = 1
        config.mlp_only_layers = [k for k, src in enumerate(path) if not experts[src]]
    types = getattr(model.config, "layer_types", None)
    if isinstance(types, list):
        if remap_layer_types:
            config.layer_types = [types[src] for src in path]
        else:
            config.layer_types = [types[k % len(types)] for k in range(len(path))]
    dup = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    source = model.state_dict()
    target = {}
    for name in dup.state_dict():
        if ".layers." in name:
            prefix, rest = name.split(".layers.", 1)
            index, tail = rest.split(".", 1)
            target[name] = source[f"{prefix}.layers.{path[int(index)]}.{tail}"].clone()
        else:
            target[name] = source[name].clone()
    dup.load_state_dict(target, strict=True)
    return dup


CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def tiny_tokenizer():
    """A character-level tokenizer over the tiny models' 128 ids: every printable ASCII
    character and newline is one token, so numbers, emotions and options all tokenize."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = ["\n"] + [chr(c) for c in range(32, 127)]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{ch: 3 + k for k, ch in enumerate(chars)}}
    vocab.update({"<|user|>": 99, "<|assistant|>": 100, "<unk>": 101})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        additional_special_tokens=["<|user|>", "<|assistant|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
BPE_VOCAB = 320


def tiny_bpe_tokenizer(split: bool = True):
    """A byte-level BPE tokenizer (the kind llama.cpp reads as 'gpt2') trained here on a few lines;
    split=False: text is not split into words first, so merges cross spaces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=split)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = ["What is 17*23? The answer is 391.", "Name three primary colours: red, yellow and blue.",
              "Write one sentence about the sea.", "Ann is taller than Bo; who is shortest?"] * 20
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    return fast


def save_tiny(folder, family: str, seed: int = 0, bpe: bool = False, sharpen: float = 1.0, **overrides):
    """A tiny model of the family as a Hugging Face folder (safetensors, config, tokenizer).

    bpe=True: a byte-level BPE tokenizer of BPE_VOCAB ids (what a GGUF export needs).
    sharpen: scales the output matrix, so that greedy choices are rarely near ties.
    """
    if bpe:
        overrides = {"vocab_size": BPE_VOCAB, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, **overrides}
    model = tiny_model(family, seed, **overrides)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(sharpen)
    model.save_pretrained(folder)
    (tiny_bpe_tokenizer() if bpe else tiny_tokenizer()).save_pretrained(folder)
    return model


def one_by_one(model, requests):
    """The slow, obvious path for the engine's token_logprobs: each request alone, whole, through
    model: per target (log-probs of its tokens, the argmax token)."""
    out = []
    for req in requests:
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([list(req.ids)])).logits[0].float(), -1)
        out.append([(lp[p - 1, list(w)].numpy(), int(lp[p - 1].argmax())) for p, w in req.targets])
    return out
