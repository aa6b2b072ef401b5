#!/usr/bin/env bash
# Build an NLTK data directory holding WordNet 3.0 from the Debian packages
# `wordnet-base` and `wordnet-sense-index` (which install /usr/share/wordnet).
#
# Usage: scripts/setup_wordnet.sh [DIR]      (default: <repo>/.nltk_data)
#
# Idempotent.  Does NOT install anything itself: install the packages first, e.g.
#   apt-get install -y --no-install-recommends wordnet-base wordnet-sense-index
# Afterwards point NLTK at DIR:  export NLTK_DATA=DIR
# (the printed last line is exactly that value).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest_root="${1:-$repo_root/.nltk_data}"
src="${WORDNET_SRC:-/usr/share/wordnet}"

# Files NLTK's WordNetCorpusReader opens (nltk/corpus/reader/wordnet.py, _FILES),
# except `lexnames`, which Debian does not ship and which we write below.
files=(
    data.adj data.adv data.noun data.verb
    index.adj index.adv index.noun index.verb
    adj.exc adv.exc noun.exc verb.exc
    index.sense cntlist.rev
)

missing=()
for f in "${files[@]}"; do
    [[ -f "$src/$f" ]] || missing+=("$src/$f")
done
if ((${#missing[@]})); then
    {
        echo "setup_wordnet.sh: WordNet 3.0 files not found:"
        printf '  %s\n' "${missing[@]}"
        echo "Install the Debian packages 'wordnet-base' and 'wordnet-sense-index', e.g."
        echo "  apt-get update && apt-get install -y --no-install-recommends wordnet-base wordnet-sense-index"
        echo "(index.sense comes from wordnet-sense-index; the rest from wordnet-base)."
    } >&2
    exit 1
fi

mkdir -p "$dest_root"
dest_root="$(cd "$dest_root" && pwd)"
dest="$dest_root/corpora/wordnet"
mkdir -p "$dest"

for f in "${files[@]}"; do
    # Copy (not symlink) so the directory stays valid if moved to another machine.
    if ! cmp -s "$src/$f" "$dest/$f"; then
        cp -f "$src/$f" "$dest/$f.tmp"
        mv -f "$dest/$f.tmp" "$dest/$f"
    fi
done

# lexnames(5WN): the fixed WordNet 3.0 list of lexicographer files,
# "NN<TAB>name<TAB>syntactic category" (1 noun, 2 verb, 3 adjective, 4 adverb).
lexnames_tmp="$dest/lexnames.tmp"
cat >"$lexnames_tmp" <<'EOF'
00	adj.all	3
01	adj.pert	3
02	adv.all	4
03	noun.Tops	1
04	noun.act	1
05	noun.animal	1
06	noun.artifact	1
07	noun.attribute	1
08	noun.body	1
09	noun.cognition	1
10	noun.communication	1
11	noun.event	1
12	noun.feeling	1
13	noun.food	1
14	noun.group	1
15	noun.location	1
16	noun.motive	1
17	noun.object	1
18	noun.person	1
19	noun.phenomenon	1
20	noun.plant	1
21	noun.possession	1
22	noun.process	1
23	noun.quantity	1
24	noun.relation	1
25	noun.shape	1
26	noun.state	1
27	noun.substance	1
28	noun.time	1
29	verb.body	2
30	verb.change	2
31	verb.cognition	2
32	verb.communication	2
33	verb.competition	2
34	verb.consumption	2
35	verb.contact	2
36	verb.creation	2
37	verb.emotion	2
38	verb.motion	2
39	verb.perception	2
40	verb.possession	2
41	verb.social	2
42	verb.stative	2
43	verb.weather	2
44	adj.ppl	3
EOF
mv -f "$lexnames_tmp" "$dest/lexnames"

echo "WordNet 3.0 for NLTK is ready in $dest" >&2
echo "Use: export NLTK_DATA=$dest_root" >&2
echo "$dest_root"
