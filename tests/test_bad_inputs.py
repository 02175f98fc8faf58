"""The table of bad inputs: each ends in one clear line naming the culprit, exit code 2, no traceback.

Every row is run through the CLI's ``main`` exactly as a user would type it; ``{run}``, ``{dir}``
and friends are filled with files made below. Nothing a row touches may change a saved run.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from chargen.checkpoint import BEST_NAME, LAST_NAME, METADATA_KEY
from chargen.pretrained import available_names
from chargen.ui.cli import main
from tests.conftest import make_text

TRAIN = ["--layers", "1", "--hidden", "32", "--seq-len", "16", "--batch-size", "8", "--max-steps", "3",
         "--device", "cpu", "--plain", "--preview-length", "0"]


def read_checkpoint(path: Path) -> tuple[dict, dict]:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()[METADATA_KEY]), {k: f.get_tensor(k) for k in f.keys()}


def tampered(src: Path, dst: Path, meta_edit=None, tensor_edit=None) -> Path:
    """A copy of checkpoint ``src`` with its metadata and/or tensors edited by hand."""
    meta, tensors = read_checkpoint(src)
    if meta_edit:
        meta_edit(meta)
    if tensor_edit:
        tensor_edit(tensors)
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dst), metadata={METADATA_KEY: json.dumps(meta)})
    return dst


def tampered_run(src_run: Path, dst: Path, **edits) -> Path:
    """A run directory whose last checkpoint is tampered (for --resume)."""
    tampered(src_run / LAST_NAME, dst / LAST_NAME, **edits)
    return dst


def _set(path: str, value):
    def edit(meta):
        *parents, key = path.split(".")
        node = meta
        for p in parents:
            node = node[p]
        if value is _DELETE:
            del node[key]
        else:
            node[key] = value
    return edit


_DELETE = object()


@pytest.fixture(scope="module")
def files(tiny_run, tmp_path_factory) -> dict[str, Path]:
    """Every bad file of the table, made once."""
    d = tmp_path_factory.mktemp("bad")
    f: dict[str, Path] = {"run": tiny_run, "dir": d}
    corpus = d / "good.txt"
    corpus.write_text(make_text(), encoding="utf-8")
    f["good"] = corpus
    (d / "empty.txt").write_bytes(b"")
    (d / "binary.bin").write_bytes(bytes(range(256)) * 8)
    (d / "latin1.txt").write_bytes("caf\u00e9 cr\u00e8me br\u00fbl\u00e9e\n".encode("latin-1") * 50)
    (d / "utf16.txt").write_text("hello world\n" * 200, encoding="utf-16")
    (d / "other.txt").write_text(make_text(seed=3), encoding="utf-8")
    (d / "short.txt").write_text("just a few words\n", encoding="utf-8")
    (d / "no_text").mkdir()
    (d / "no_text" / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" * 10)
    (d / "empty_dir").mkdir()
    os.mkfifo(d / "fifo.txt")
    (d / "unreadable.txt").write_text("secret\n")
    (d / "unreadable.txt").chmod(0)
    (d / "heldout_unknown.txt").write_text("zebra QUIZ 123 \u00e9\u00e9\n" * 20, encoding="utf-8")
    (d / "one_char.txt").write_text("a", encoding="utf-8")

    last = tiny_run / LAST_NAME
    ck = d / "ckpt"
    ck.mkdir()
    data = last.read_bytes()
    (ck / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (ck / "header_only.safetensors").write_bytes(data[:8])
    # The first 8 bytes of a checkpoint whose header is 640 bytes long: they open as a pickle does.
    (ck / "header_0x280.safetensors").write_bytes((0x280).to_bytes(8, "little"))
    (ck / "empty.safetensors").write_bytes(b"")
    (ck / "text.safetensors").write_text("hello, I am not a checkpoint\n")
    (ck / "pickle.pt").write_bytes(pickle.dumps({"state_dict": {"w": [1.0, 2.0]}}, protocol=2))
    torch.save({"w": torch.zeros(3)}, ck / "torch_save.pt")  # zip + pickle, the modern format
    assert zipfile.is_zipfile(ck / "torch_save.pt")
    save_file({"w": torch.zeros(3)}, str(ck / "foreign.safetensors"), metadata={"other": "tool"})
    meta, tensors = read_checkpoint(last)
    save_file(tensors, str(ck / "not_json.safetensors"), metadata={METADATA_KEY: "{not json"})
    save_file(tensors, str(ck / "list_meta.safetensors"), metadata={METADATA_KEY: "[1, 2]"})

    t = lambda name, **edits: tampered(last, ck / f"{name}.safetensors", **edits)  # noqa: E731
    f["future"] = t("future", meta_edit=_set("format_version", 99))
    f["old_format"] = t("old_format", meta_edit=_set("format_version", 0))
    f["version_string"] = t("version_string", meta_edit=_set("format_version", "1"))
    f["no_version"] = t("no_version", meta_edit=_set("format_version", _DELETE))
    f["huge_vocab"] = t("huge_vocab", meta_edit=_set("model.vocab_size", 10**9))
    f["hidden_str"] = t("hidden_str", meta_edit=_set("model.hidden", "32"))
    f["layers_bool"] = t("layers_bool", meta_edit=_set("model.layers", True))
    f["no_layers"] = t("no_layers", meta_edit=_set("model.layers", _DELETE))
    f["no_model"] = t("no_model", meta_edit=_set("model", _DELETE))
    f["bad_cell"] = t("bad_cell", meta_edit=_set("model.cell", "transformer"))
    f["nan_dropout"] = t("nan_dropout", meta_edit=_set("model.dropout", float("nan")))
    f["shape_mismatch"] = t("shape_mismatch", meta_edit=_set("model.hidden", 64))
    f["huge_hidden"] = t("huge_hidden", meta_edit=_set("model.hidden", 60000))
    f["absurd_size"] = t("absurd_size", meta_edit=lambda m: m["model"].update(hidden=16384, layers=64))
    f["dropout_one"] = t("dropout_one", meta_edit=_set("model.dropout", 1.0))
    f["weight_drop_two"] = t("weight_drop_two", meta_edit=_set("model.weight_drop", 2))
    f["locked_text"] = t("locked_text", meta_edit=_set("model.locked_dropout", "yes"))
    f["vocab_mismatch"] = t("vocab_mismatch", meta_edit=_set("tokenizer.chars", "abc"))
    f["dup_chars"] = t("dup_chars", meta_edit=_set("tokenizer.chars", "a" * 28))
    f["bad_tok_kind"] = t("bad_tok_kind", meta_edit=_set("tokenizer.kind", "wordpiece"))
    f["no_tokenizer"] = t("no_tokenizer", meta_edit=_set("tokenizer", _DELETE))
    f["sp_garbage"] = t("sp_garbage", meta_edit=_set("tokenizer", {"kind": "sentencepiece", "model": "AAAA"}))
    f["sp_not_b64"] = t("sp_not_b64", meta_edit=_set("tokenizer", {"kind": "sentencepiece", "model": "%%%"}))
    f["bad_normalize"] = t("bad_normalize", meta_edit=_set("tokenizer.normalize", "NFX"))
    f["step_str"] = t("step_str", meta_edit=_set("summary.step", "lots"))
    f["no_summary"] = t("no_summary", meta_edit=_set("summary", _DELETE))
    f["corpus_int"] = t("corpus_int", meta_edit=_set("summary.corpus", 7))
    f["epoch_str"] = t("epoch_str", meta_edit=_set("summary.epoch", "x"))
    f["missing_tensor"] = t("missing_tensor", tensor_edit=lambda ts: ts.pop("model.rnn.weight_hh_l0"))
    f["nan_weight"] = t("nan_weight", tensor_edit=lambda ts: ts["model.embed.weight"].__setitem__((0, 0), float("nan")))
    f["int_weight"] = t("int_weight", tensor_edit=lambda ts: ts.__setitem__(
        "model.head.bias", torch.zeros_like(ts["model.head.bias"], dtype=torch.int32)))

    rn = lambda name, **edits: tampered_run(tiny_run, d / "runs" / name, **edits)  # noqa: E731
    f["r_optim_shape"] = rn("optim_shape", tensor_edit=lambda ts: ts.__setitem__("optim.0.exp_avg", torch.zeros(3)))
    f["r_optim_name"] = rn("optim_name", tensor_edit=lambda ts: ts.__setitem__("optim.99.exp_avg", torch.zeros(3)))
    f["r_state_shape"] = rn("state_shape", tensor_edit=lambda ts: ts.__setitem__("rnn_state.h", torch.zeros(1, 2, 3)))
    f["r_rng"] = rn("rng", tensor_edit=lambda ts: ts.__setitem__("rng.torch", torch.zeros(5, dtype=torch.uint8)))
    f["r_train_config"] = rn("train_config", meta_edit=_set("summary.train_config.seq_len", -4))
    f["r_train_config_auto"] = rn("train_config_auto", meta_edit=_set("summary.train_config.hidden", "auto"))
    f["r_ar"] = rn("ar", meta_edit=_set("summary.ar", float("nan")))
    f["r_groups"] = rn("groups", meta_edit=_set("summary.optimizer_param_groups", [{"lr": 1}]))
    f["r_no_optim"] = rn("no_optim", tensor_edit=lambda ts: [ts.pop(k) for k in list(ts) if k.startswith("optim.")])
    f["r_corpus_gone"] = rn("corpus_gone", meta_edit=_set("summary.corpus", [str(d / "deleted.txt")]))
    f["r_corpus_unknown"] = rn("corpus_unknown", meta_edit=_set("summary.corpus", []))
    f["r_metrics_dir"] = rn("metrics_dir")
    (f["r_metrics_dir"] / "metrics.jsonl").mkdir()
    (d / "runs" / "only_best").mkdir()
    (d / "runs" / "ckpt_is_dir" / LAST_NAME).mkdir(parents=True)
    shutil.copy(tiny_run / BEST_NAME, d / "runs" / "only_best" / BEST_NAME)
    return f


# A missing checkpoint's message names the built-in models, when any is installed.
NO_SUCH_CHECKPOINT = (f"no such checkpoint file, run directory or built-in model ({', '.join(available_names())}; "
                      "see chargen models)" if available_names() else "no such checkpoint file or run directory")

# (id, argv, what the one line must say). Placeholders: {run} tiny trained run, {dir} the bad
# files' folder, {ck} the checkpoints folder, {good} a good corpus, {runs} tampered runs.
CASES = [
    # -- corpus files
    ("missing corpus", "train {dir}/nope.txt", "nope.txt: no such file or directory"),
    ("empty corpus", "train {dir}/empty.txt", "empty.txt: is empty, nothing to train on"),
    ("binary corpus", "train {dir}/binary.bin", "binary.bin: looks like a binary file (NUL byte at offset 0)"),
    ("non-UTF-8 corpus", "train {dir}/latin1.txt", "latin1.txt: invalid utf-8 at byte offset 3; pass --encoding"),
    ("UTF-16 without --encoding", "train {dir}/utf16.txt", "utf16.txt: looks like a binary file"),
    ("corpus shorter than a batch", "train {dir}/short.txt", "fewer than one batch needs"),
    ("directory with no text", "train {dir}/no_text", "no_text: directory has no text files"),
    ("empty directory", "train {dir}/empty_dir", "empty_dir: directory has no text files"),
    ("unreadable corpus", "train {dir}/unreadable.txt", "unreadable.txt: permission denied"),
    ("a FIFO as corpus", "train {dir}/fifo.txt", "fifo.txt: not a regular file or directory"),
    ("unknown encoding", "train {good} --encoding klingon", "--encoding 'klingon': unknown text encoding"),
    ("UTF-8 text read as UTF-16", "train {good} --encoding utf-16", "good.txt: cannot decode as utf-16"),
    ("a bytes codec as encoding", "train {good} --encoding base64", "--encoding 'base64': not a text encoding"),
    ("no corpus at all", "train", "give a corpus"),
    ("--out is a file", "train {good} --out {good}", "is a file, not a directory"),
    ("--out holds a run", "train {good} --out {run}", "already holds a training run; continue it with --resume"),
    # -- train numbers: negative, zero, NaN, huge (values that are valid, e.g. --dropout 0, are not here)
    *[(f"--{opt} {val}", f"train {{good}} --{opt} {val}", msg) for opt, val, msg in [
        ("layers", "-1", "--layers -1: must be a whole number from 1"),
        ("layers", "0", "--layers 0: must be a whole number from 1"),
        ("layers", "nan", "argument --layers: invalid int value: 'nan'"),
        ("layers", "100", "--layers 100: must be at most 64"),
        ("hidden", "-5", "--hidden -5: must be auto or a whole number from 1"),
        ("hidden", "0", "--hidden 0: must be"),
        ("hidden", "1e3", "argument --hidden: invalid hidden '1e3': use auto or a whole number such as 512"),
        ("seq-len", "long", "argument --seq-len: invalid seq len 'long': use auto or a whole number"),
        ("hidden", "99999999", "--hidden 99999999: must be"),
        ("seq-len", "-1", "--seq-len -1: must be"),
        ("seq-len", "0", "--seq-len 0: must be"),
        ("seq-len", "1000000", "fewer than one batch needs"),
        ("seq-len", "99999999999", "--seq-len 99999999999: must be"),
        ("batch-size", "0", "--batch-size 0: must be"),
        ("batch-size", "-8", "--batch-size -8: must be"),
        ("batch-size", "100000", "fewer than one batch needs"),
        ("dropout", "-0.1", "--dropout -0.1: must be auto or a number in [0, 1)"),
        ("dropout", "1", "--dropout 1.0: must be auto or a number in [0, 1)"),
        ("dropout", "nan", "--dropout nan: must be auto or a number in [0, 1)"),
        ("dropout", "lots", "invalid dropout 'lots': use auto or a number such as 0.2"),
        ("weight-drop", "1", "--weight-drop 1.0: must be a number in [0, 1)"),
        ("embed-dropout", "-0.5", "--embed-dropout -0.5: must be a number in [0, 1)"),
        ("embed-dropout", "nan", "--embed-dropout nan: must be a number in [0, 1)"),
        ("ar", "-1", "--ar -1.0: must be auto or a number from 0 to 100"),
        ("tar", "nan", "--tar nan: must be auto or a number from 0 to 100"),
        ("tar", "1e9", "--tar 1000000000.0: must be auto or a number from 0 to 100"),
        ("ar", "some", "invalid ar 'some': use auto or a number such as 2"),
        ("lr", "0", "--lr 0.0: must be auto or a number in (0, 10]"),
        ("lr", "-1", "--lr -1.0: must be auto or a number in (0, 10]"),
        ("lr", "fast", "invalid lr 'fast': use auto or a number such as 5e-3"),
        ("lr", "nan", "--lr nan: must be"),
        ("lr", "inf", "--lr inf: must be"),
        ("lr", "1e300", "--lr 1e+300: must be"),
        ("schedule", "step", "--schedule step: choose cosine or linear"),
        ("min-lr-frac", "-1", "--min-lr-frac -1.0: must be in [0, 1]"),
        ("min-lr-frac", "nan", "--min-lr-frac nan: must be in [0, 1]"),
        ("min-lr-frac", "2", "--min-lr-frac 2.0: must be in [0, 1]"),
        ("warmup-steps", "-1", "--warmup-steps -1: must be >= 0"),
        ("warmup-steps", "nan", "argument --warmup-steps: invalid int value"),
        ("warmup-steps", "10000000000000000000000", "--warmup-steps 10000000000000000000000: must be >= 0 and at most"),
        ("weight-decay", "-1", "--weight-decay -1.0: must be auto or a number in [0, 1]"),
        ("weight-decay", "nan", "--weight-decay nan: must be auto or a number in [0, 1]"),
        ("weight-decay", "1e9", "--weight-decay 1000000000.0: must be auto or a number in [0, 1]"),
        ("weight-decay", "strong", "invalid weight decay 'strong': use auto or a number such as 0.3"),
        ("grad-clip", "0", "--grad-clip 0.0: must be a number > 0"),
        ("grad-clip", "-1", "--grad-clip -1.0: must be a number > 0"),
        ("grad-clip", "nan", "--grad-clip nan: must be a number > 0"),
        ("grad-clip", "inf", "--grad-clip inf: must be a number > 0"),
        ("max-steps", "0", "--max-steps 0: must be a whole number >= 1"),
        ("max-steps", "-10", "--max-steps -10: must be a whole number >= 1"),
        ("max-steps", "nan", "argument --max-steps: invalid int value"),
        ("max-steps", "10000000000000000000000", "--max-steps 10000000000000000000000: must be a whole number >= 1 and at most"),
        ("max-time", "0", "argument --max-time: invalid duration '0': must be more than 0"),
        ("max-time=-5m", "", "argument --max-time: invalid duration '-5m'"),
        ("max-time", "nan", "argument --max-time: invalid duration 'nan'"),
        ("max-time", "soon", "argument --max-time: invalid duration 'soon'"),
        ("max-time", "99999999999999999999h", "must be > 0 and at most a year"),
        ("epochs", "0", "--epochs 0.0: must be a number > 0"),
        ("epochs", "-1", "--epochs -1.0: must be a number > 0"),
        ("epochs", "nan", "--epochs nan: must be a number > 0"),
        ("epochs", "inf", "--epochs inf: must be a number > 0"),
        ("epochs", "1e308", "--epochs 1e+308: must be a number > 0 and at most"),
        ("val-frac", "-0.1", "--val-frac -0.1: must be in [0, 1)"),
        ("val-frac", "1", "--val-frac 1.0: must be in [0, 1)"),
        ("val-frac", "nan", "--val-frac nan: must be in [0, 1)"),
        ("val-frac", "0.00001", "--val-frac 1e-05: the validation split is empty"),
        ("eval-every", "0", "--eval-every 0: must be"),
        ("eval-every", "-1", "--eval-every -1: must be"),
        ("eval-every", "10000000000", "--eval-every 10000000000: must be"),
        ("log-every", "0", "--log-every 0: must be"),
        ("log-every", "-3", "--log-every -3: must be"),
        ("log-every", "10000000000", "--log-every 10000000000: must be"),
        ("eval-tokens", "-1", "--eval-tokens -1: must be a whole number >= 0"),
        ("eval-tokens", "nan", "argument --eval-tokens: invalid int value"),
        ("preview-length", "-1", "--preview-length -1: must be between 0 and 10000"),
        ("preview-length", "1000000000", "--preview-length 1000000000: must be between 0 and 10000"),
        ("vocab-size", "0", "--vocab-size 0: must be between 300 and 1000000"),
        ("vocab-size", "-1", "--vocab-size -1: must be between 300 and 1000000"),
        ("vocab-size", "10000000000", "--vocab-size 10000000000: must be between 300 and 1000000"),
        ("seed", "100000000000000000000000", "--seed 100000000000000000000000: must be a whole number that fits in 64 bits"),
        ("seed", "nan", "argument --seed: invalid int value"),
        ("cell", "transformer", "--cell transformer: choose one of"),
        ("tokenizer", "wordpiece", "--tokenizer wordpiece: choose one of"),
        ("normalize", "nfc", "--normalize nfc: choose NFC or NFKC"),
        ("precision", "fp8", "--precision fp8: choose auto, fp32 or bf16"),
        ("device", "tpu", "--device tpu: choose auto, cpu, cuda or mps"),
    ]],
    ("model too big for memory", "train {good} --layers 64 --hidden 16384", "GB to train, but this cpu has"),
    ("--init-from garbage", "train {good} --init-from {ck}/text.safetensors", "text.safetensors: not a chargen checkpoint"),
    # -- --resume
    ("resume nothing", "train --resume {dir}/nope", f"nope: {NO_SUCH_CHECKPOINT}"),
    ("resume a dir without last", "train --resume {runs}/only_best", "no last.safetensors in this directory"),
    ("resume an empty run dir", "train --resume {dir}/empty_dir", "no last.safetensors in this directory"),
    ("resume a file that is no checkpoint", "train --resume {good}", "good.txt: not a chargen checkpoint"),
    ("resume a best checkpoint", "train --resume {run}/best.safetensors", "has no optimizer state"),
    ("resume changing the model", "train --resume {run} --hidden 64", "--hidden 64: this run was trained with --hidden 32"),
    ("resume another corpus", "train {dir}/other.txt --resume {run}", "other.txt: not the text this run was trained on"),
    ("resume, corpus gone", "train --resume {runs}/corpus_gone",
     "deleted.txt: this run's corpus is no longer there; if it moved, give its new place: chargen train NEW_PATH "
     "--resume"),
    ("resume, corpus not recorded", "train --resume {runs}/corpus_unknown", "the checkpoint does not record its corpus"),
    ("resume, metrics log a directory", "train --resume {runs}/metrics_dir", "cannot read the metrics log"),
    ("resume, optimizer tensor shape", "train --resume {runs}/optim_shape", "optimizer tensor optim.0.exp_avg has the wrong shape"),
    ("resume, optimizer tensor name", "train --resume {runs}/optim_name", "unexpected optimizer tensor optim.99.exp_avg"),
    ("resume, carried state shape", "train --resume {runs}/state_shape", "carried recurrent state has the wrong shape"),
    ("resume, RNG state", "train --resume {runs}/rng", "optimizer or RNG state does not load"),
    ("resume, train config", "train --resume {runs}/train_config", "the saved training config is invalid (--seq-len -4"),
    ("resume, train config auto", "train --resume {runs}/train_config_auto",
     "the saved training config is invalid (hidden and seq_len must be numbers)"),
    ("resume, chosen ar", "train --resume {runs}/ar", "its activation penalty (ar) is missing or invalid"),
    ("resume, param groups", "train --resume {runs}/groups", "optimizer settings do not match the model"),
    ("resume, no optimizer", "train --resume {runs}/no_optim", "has no optimizer state"),
    # -- checkpoints, through sample (info and eval share the loader)
    ("missing checkpoint", "sample {dir}/nope.safetensors", f"nope.safetensors: {NO_SUCH_CHECKPOINT}"),
    ("dir without checkpoint", "sample {dir}/empty_dir", "no checkpoint in this directory"),
    ("checkpoint name is a directory", "sample {runs}/ckpt_is_dir/last.safetensors", "last.safetensors: no checkpoint in this directory"),
    ("truncated checkpoint", "sample {ck}/truncated.safetensors", "truncated.safetensors: checkpoint is corrupt or truncated"),
    ("8-byte checkpoint", "sample {ck}/header_only.safetensors", "(file is empty or truncated)"),
    ("8 bytes that open like a pickle", "sample {ck}/header_0x280.safetensors", "(file is empty or truncated)"),
    ("empty checkpoint", "info {ck}/empty.safetensors", "(file is empty or truncated)"),
    ("text as checkpoint", "info {ck}/text.safetensors", "not a chargen checkpoint"),
    ("pickle .pt", "sample {ck}/pickle.pt", "pickle.pt: this is a pickle/torch.save file; chargen only loads"),
    ("torch.save .pt", "info {ck}/torch_save.pt", "torch_save.pt: this is a pickle/torch.save file"),
    ("FIFO as checkpoint", "info {dir}/fifo.txt", "fifo.txt: not a regular file"),
    ("foreign safetensors", "info {ck}/foreign.safetensors", "a safetensors file, but not a chargen checkpoint"),
    ("metadata not JSON", "info {ck}/not_json.safetensors", "checkpoint metadata is not valid JSON"),
    ("metadata a list", "info {ck}/list_meta.safetensors", "checkpoint metadata must be a JSON object"),
    ("format from the future", "sample {ck}/future.safetensors", "checkpoint format 99 is newer than this chargen understands (1); upgrade chargen"),
    ("format too old", "sample {ck}/old_format.safetensors", "checkpoint format 0 is not supported"),
    ("format version a string", "info {ck}/version_string.safetensors", "lacks an integer format_version"),
    ("format version missing", "info {ck}/no_version.safetensors", "lacks an integer format_version"),
    ("vocab of 10^9", "sample {ck}/huge_vocab.safetensors", "model config 'vocab_size' is 1000000000, expected int in [1, 2097152]"),
    ("hidden a string", "info {ck}/hidden_str.safetensors", "model config 'hidden' is '32', expected int"),
    ("layers a bool", "info {ck}/layers_bool.safetensors", "model config 'layers' is True, expected int"),
    ("layers missing", "info {ck}/no_layers.safetensors", "model config 'layers' is None, expected int"),
    ("model config missing", "info {ck}/no_model.safetensors", "lacks the model config"),
    ("unknown cell", "info {ck}/bad_cell.safetensors", "model config 'cell' is 'transformer', expected one of"),
    ("NaN dropout", "info {ck}/nan_dropout.safetensors", "model config 'dropout' is nan"),
    ("shapes disagree with config", "sample {ck}/shape_mismatch.safetensors", "has shape [28, 32] but the config implies [28, 64]"),
    ("hidden over the bound", "info {ck}/huge_hidden.safetensors", "model config 'hidden' is 60000, expected int in [1, 16384]"),
    ("dropout of 1", "info {ck}/dropout_one.safetensors", "model config 'dropout' is 1.0, expected a number in [0, 1.0)"),
    ("weight drop of 2", "info {ck}/weight_drop_two.safetensors", "model config 'weight_drop' is 2, expected a number in [0, 1.0)"),
    ("locked dropout a string", "info {ck}/locked_text.safetensors", "model config 'locked_dropout' is 'yes', expected bool"),
    ("absurd size", "info {ck}/absurd_size.safetensors", "refusing absurd sizes"),
    ("tokenizer/model vocab differ", "info {ck}/vocab_mismatch.safetensors", "tokenizer has 3 symbols but the model expects 28"),
    ("duplicate vocab chars", "info {ck}/dup_chars.safetensors", "vocabulary must be distinct single characters"),
    ("unknown tokenizer kind", "info {ck}/bad_tok_kind.safetensors", "unknown kind 'wordpiece'"),
    ("tokenizer missing", "info {ck}/no_tokenizer.safetensors", "tokenizer metadata is invalid"),
    ("sentencepiece blob garbage", "info {ck}/sp_garbage.safetensors", "sentencepiece tokenizer data does not parse"),
    ("sentencepiece blob not base64", "info {ck}/sp_not_b64.safetensors", "sentencepiece 'model' is not base64"),
    ("bad normalization", "info {ck}/bad_normalize.safetensors", "unknown normalization 'NFX'"),
    ("summary step a string", "info {ck}/step_str.safetensors", "checkpoint summary 'step' is 'lots', expected a whole number"),
    ("summary missing", "info {ck}/no_summary.safetensors", "lacks the training summary"),
    ("summary corpus an int", "info {ck}/corpus_int.safetensors", "checkpoint summary 'corpus' is 7, expected a list of paths"),
    ("summary epoch a string", "info {ck}/epoch_str.safetensors", "checkpoint summary 'epoch' is 'x'"),
    ("tensor missing", "sample {ck}/missing_tensor.safetensors", "tensor model.rnn.weight_hh_l0 is missing"),
    ("NaN weight", "sample {ck}/nan_weight.safetensors", "tensor model.embed.weight holds non-finite or non-float values"),
    ("int weight", "sample {ck}/int_weight.safetensors", "tensor model.head.bias holds non-finite or non-float values"),
    # -- sampling numbers and text
    ("prime with unknown chars", "sample {run} --prime Zebra\u00e9", "--prime has characters the model never saw: 'Z' (U+005A)"),
    ("prime with a lone surrogate", "sample {run} --prime a\udcff", "--prime has characters the model never saw: '\\udcff'"),
    *[(f"sample --{opt} {val}", f"sample {{run}} --{opt} {val}", msg) for opt, val, msg in [
        ("temp", "-1", "--temp -1.0: must be a number >= 0"),
        ("temp", "nan", "--temp nan: must be a number >= 0"),
        ("temp", "inf", "--temp inf: must be a number >= 0"),
        ("top-k", "-1", "--top-k -1: must be >= 0"),
        ("top-k", "nan", "argument --top-k: invalid int value"),
        ("top-p", "0", "--top-p 0.0: must be in (0, 1]"),
        ("top-p", "-1", "--top-p -1.0: must be in (0, 1]"),
        ("top-p", "nan", "--top-p nan: must be in (0, 1]"),
        ("top-p", "1e9", "--top-p 1000000000.0: must be in (0, 1]"),
        ("length", "-1", "--length -1: must be between 0 and 10,000,000"),
        ("length", "100000000000000000000", "--length 100000000000000000000: must be between 0 and 10,000,000"),
        ("length", "10000001", "--length 10000001: must be between 0 and 10,000,000"),
        ("num-samples", "0", "--num-samples 0: must be between 1 and 10000"),
        ("num-samples", "-2", "--num-samples -2: must be between 1 and 10000"),
        ("num-samples", "1000000000", "--num-samples 1000000000: must be between 1 and 10000"),
        ("beam", "-1", "--beam -1: must be between 0 (off) and 1000"),
        ("beam", "1000000000", "--beam 1000000000: must be between 0 (off) and 1000"),
        ("seed", "100000000000000000000000", "--seed 100000000000000000000000: must be a whole number that fits in 64 bits"),
        ("seed", "1.5", "argument --seed: invalid int value"),
        ("stop", "''", "--stop: a stop string must not be empty"),
        ("device", "tpu", "--device tpu: choose auto, cpu, cuda or mps"),
    ]],
    # -- repl: the same settings, checked before the model loads
    *[(f"repl --{opt} {val}", f"repl {{run}} --{opt} {val}", msg) for opt, val, msg in [
        ("temp", "nan", "--temp nan: must be a number >= 0"),
        ("top-p", "0", "--top-p 0.0: must be in (0, 1]"),
        ("length", "-1", "--length -1: must be between 0 and 10,000,000"),
        ("length", "100000000000000000000", "--length 100000000000000000000: must be between 0 and 10,000,000"),
        ("seed", "100000000000000000000000", "--seed 100000000000000000000000: must be a whole number that fits in 64 bits"),
    ]],
    # -- eval
    ("eval text with unknown chars", "eval {run} {dir}/heldout_unknown.txt", "has characters the model never saw"),
    ("eval text of one char", "eval {run} {dir}/one_char.txt", "too short"),
    ("eval binary text", "eval {run} {dir}/binary.bin", "binary.bin: looks like a binary file"),
    ("eval missing text", "eval {run} {dir}/nope.txt", "nope.txt: no such file or directory"),
    # -- corpus builder
    *[(f"corpus --max-mb {val}", f"corpus stdlib --max-mb {val} -o {{dir}}/built.txt", msg) for val, msg in [
        ("0", "--max-mb 0.0: must be a number > 0"),
        ("-1", "--max-mb -1.0: must be a number > 0"),
        ("nan", "--max-mb nan: must be a number > 0"),
        ("inf", "--max-mb inf: must be a number > 0"),
        ("1e308", "--max-mb 1e+308: must be a number > 0 and at most 1,000,000"),
    ]],
    ("corpus --lag huge", "corpus long-lag --lag 100000000000000000000 -o {dir}/ll.txt",
     "--lag 100000000000000000000: must be a whole number in [0, 100000]"),
    ("corpus --lag negative", "corpus long-lag --lag -1 -o {dir}/ll.txt", "--lag -1: must be a whole number in [0, 100000]"),
    ("unknown command", "fly", "argument COMMAND: invalid choice: 'fly'"),
]


def _argv(template: str, files: dict[str, Path]) -> list[str]:
    import shlex

    subs = {"run": files["run"], "dir": files["dir"], "ck": files["dir"] / "ckpt", "good": files["good"],
            "runs": files["dir"] / "runs"}
    argv = [arg.format(**subs) for arg in shlex.split(template)]
    if argv[0] == "train":  # small and quick; a row's own value comes later and wins
        argv[1:1] = ["--plain"] if "--resume" in argv else TRAIN
    return argv


def _tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file() and p.name != ".lock":
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("name, template, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line_and_exit_2(files, capsys, monkeypatch, name, template, message):
    argv = _argv(template, files)
    if name == "unreadable corpus" and os.geteuid() == 0:
        # root reads anything: make the permission check fail the way it does for users
        from chargen.text import files as files_module
        monkeypatch.setattr(files_module.os, "access", lambda path, mode: "unreadable" not in str(path))
    monkeypatch.chdir(files["dir"])  # any default run directory lands in the scratch folder
    before = _tree_digest(files["run"])
    code, out, err = run_cli(argv, capsys)
    assert code == 2, f"{name}: exit {code}\n{out}\n{err}"
    assert message in err, f"{name}: {err!r}"
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert _tree_digest(files["run"]) == before  # nothing saved was touched


def test_the_installed_cli_exits_2_with_one_line(files, tmp_path):
    """The same contract through the real entry point, as a shell sees it."""
    import subprocess
    import sys

    chargen = Path(sys.executable).with_name("chargen")
    for args, message in [
        ([str(files["dir"] / "ckpt" / "pickle.pt")], "pickle/torch.save file"),
        ([str(files["dir"] / "ckpt" / "future.safetensors")], "upgrade chargen"),
    ]:
        proc = subprocess.run([str(chargen), "info", *args], capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stdout == ""
    proc = subprocess.run([str(chargen), "--debug", "info", str(files["dir"] / "ckpt" / "pickle.pt")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" in proc.stderr  # --debug shows where it came from


def test_a_valid_pickle_is_never_unpickled(files, tmp_path, capsys, monkeypatch):
    """A malicious pickle must not run: loading it would call the payload."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps(Payload(), protocol=4))
    code, _, err = run_cli(["sample", str(evil)], capsys)
    assert code == 2 and "pickle" in err and not marker.exists()
    torch.save({"x": Payload()}, tmp_path / "evil.pt")
    code, _, err = run_cli(["info", str(tmp_path / "evil.pt")], capsys)
    assert code == 2 and not marker.exists()
