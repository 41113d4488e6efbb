"""tiny_model.py makes thaw's tiny test model, thaw-test/tiny-llama, with no
download, as a Hugging Face hub cache that vLLM loads by repo id:

    HF_HOME=<dir> HF_HUB_OFFLINE=1 vllm serve thaw-test/tiny-llama

Usage: tiny_model.py HF_HOME_DIR   (run with the vLLM virtualenv's python,
bin/vllm-python; scripts/vllm.sh does, with HF_HOME_DIR = <repo>/.cache/hf).

What it is:
  - Llama architecture, random weights (torch seed 0), float32: hidden 128,
    intermediate 256, 2 layers, 4 attention heads and 4 KV heads (head size
    32: vLLM's CPU backend needs >= 32), max_position_embeddings 2048 (so
    vLLM's max_model_len is 2048), untied embeddings. About 3.5 MB.
  - A byte-level BPE tokenizer with a vocabulary of 2048 (special tokens
    included), trained with `tokenizers` on a fixed generated corpus, wrapped
    in PreTrainedTokenizerFast: <s> (bos, added in front of plain prompts),
    </s> (eos), <unk>, <pad>, and <|system|> <|user|> <|assistant|>.
  - A chat template for system/user/assistant messages:
        <s><|system|>\n...</s>\n<|user|>\n...</s>\n<|assistant|>\n
    the last line only with add_generation_prompt.
  Its output is gibberish; it exists to exercise the real serving path.

Layout: HF_HOME_DIR/hub/models--thaw-test--tiny-llama/refs/main holds
SNAPSHOT (a fixed string: the sha1 of the recipe name below; bump RECIPE when
changing anything here) and snapshots/SNAPSHOT/ holds the files. The snapshot
is built in a temporary directory and renamed into place, refs/main written
last, so an interrupted run never looks complete; a complete one is left
alone (the check imports nothing heavy: a fraction of a second). Everything
is seeded, so reruns write identical files.

Prints one line saying what it did.
"""

import hashlib
import os
import shutil
import sys

REPO_ID = "thaw-test/tiny-llama"
RECIPE = f"{REPO_ID} recipe 1"
SNAPSHOT = hashlib.sha1(RECIPE.encode()).hexdigest()
VOCAB_SIZE = 2048
MAX_POSITIONS = 2048
FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
SPECIAL = ["<s>", "</s>", "<unk>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]

WORDS = """the be to of and a in that have it for not on with he as you do at
this but his by from they we say her she or an will my one all would there
their what so up out if about who get which go me when make can like time no
just him know take people into year your good some could them see other than
then now look only come its over think also back after use two how our work
first well way even new want because any these give day most us model token
server request reply engine cold start scale zero warm queue thaw ice river
lake stone cloud rain snow wind light green blue red black white small large
fast slow early late north south east west hello thanks please yes maybe
question answer story poem number list table code function value error""".split()


def complete(repo_dir):
    try:
        with open(os.path.join(repo_dir, "refs", "main")) as f:
            if f.read().strip() != SNAPSHOT:
                return False
    except OSError:
        return False
    snap = os.path.join(repo_dir, "snapshots", SNAPSHOT)
    return all(os.path.isfile(os.path.join(snap, name)) for name in FILES)


def corpus():
    """A fixed generated corpus: sentences, numbers, code-ish and chat text."""
    import random

    rng = random.Random(20261127)
    lines = []
    for i in range(20000):
        n = rng.randint(3, 16)
        words = [rng.choice(WORDS) for _ in range(n)]
        if rng.random() < 0.3:
            words.insert(rng.randrange(n), str(rng.randint(0, 100000)))
        s = " ".join(words)
        kind = i % 5
        if kind == 0:
            s = s.capitalize() + rng.choice([".", "?", "!", ","])
        elif kind == 1:
            s = f"<|{rng.choice(['system', 'user', 'assistant'])}|>\n{s}"
        elif kind == 2:
            s = f"def {words[0]}_{words[-1]}(x):\n    return x + {rng.randint(0, 9)}"
        elif kind == 3:
            s = '{"' + words[0] + '": "' + " ".join(words[1:]) + '"}'
        lines.append(s)
    return lines


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=SPECIAL[4:],
        chat_template=CHAT_TEMPLATE,
        model_max_length=MAX_POSITIONS,
        clean_up_tokenization_spaces=False,
    )


def make_model(tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=32,
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.float32)
    return model


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: tiny_model.py HF_HOME_DIR")
    hf_home = sys.argv[1]
    repo_dir = os.path.join(hf_home, "hub", "models--" + REPO_ID.replace("/", "--"))
    if complete(repo_dir):
        print(f"tiny model {REPO_ID}: already there ({hf_home})")
        return

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    tmp = os.path.join(hf_home, f".tmp-tiny-llama-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        tokenizer = make_tokenizer()
        if len(tokenizer) != VOCAB_SIZE:
            sys.exit(f"tokenizer has {len(tokenizer)} tokens, want {VOCAB_SIZE}")
        model = make_model(tokenizer)
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
        for name in FILES:
            if not os.path.isfile(os.path.join(tmp, name)):
                sys.exit(f"save_pretrained wrote no {name}")

        snap = os.path.join(repo_dir, "snapshots", SNAPSHOT)
        os.makedirs(os.path.dirname(snap), exist_ok=True)
        os.makedirs(os.path.join(repo_dir, "refs"), exist_ok=True)
        shutil.rmtree(snap, ignore_errors=True)
        os.replace(tmp, snap)
        ref_tmp = os.path.join(repo_dir, "refs", f".main.tmp-{os.getpid()}")
        with open(ref_tmp, "w") as f:
            f.write(SNAPSHOT)
        os.replace(ref_tmp, os.path.join(repo_dir, "refs", "main"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    size = sum(os.path.getsize(os.path.join(snap, n)) for n in os.listdir(snap))
    print(
        f"tiny model {REPO_ID}: made ({hf_home}, snapshot {SNAPSHOT[:12]}, "
        f"{size / 1e6:.1f} MB, vocab {VOCAB_SIZE}, max_model_len {MAX_POSITIONS})"
    )


if __name__ == "__main__":
    main()
