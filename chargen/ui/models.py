"""``chargen models``: the built-in models, usable by name wherever a checkpoint is expected."""

from __future__ import annotations

import json

from ..pretrained import builtin_models, models_dir, shadowed_by


def add_models_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object per model, one per line")


def model_rows() -> list[dict]:
    """What ``chargen models`` lists: name, size, corpus, validation loss and what a name means here."""
    rows = []
    for model in builtin_models():
        shadow = shadowed_by(model.name)
        rows.append({"name": model.name, "installed": model.installed, "path": str(model.path),
                     "size_bytes": model.size_bytes, "corpus": model.corpus, "val_loss": model.val_loss,
                     "train_command": model.train_command, "description": model.description,
                     "shadowed_by": str(shadow) if shadow else None})
    return rows


def describe_row(row: dict) -> str:
    size = f"{row['size_bytes'] / 1e6:.1f} MB" if row["size_bytes"] is not None else "not installed"
    loss = f"val loss {row['val_loss']:.4f} nats/char" if row["val_loss"] is not None else "val loss -"
    line = f"{row['name']:<12} {size:>13}  {loss}  corpus: {row['corpus'] or '-'}"
    if row["shadowed_by"]:
        line += f"\n{'':<12} note: ./{row['shadowed_by']} here wins over the built-in model of that name"
    return line


def models(args) -> int:
    rows = model_rows()
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    if not rows:
        print(f"no built-in models in {models_dir()}")
        return 0
    for row in rows:
        print(describe_row(row))
    print("use a name wherever a checkpoint goes: chargen repl NAME, chargen sample NAME, "
          "chargen train DIR --init-from NAME")
    return 0
