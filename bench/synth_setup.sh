# Sourced by the end-to-end benches (calibrate_e2e.sh, profile.sh, ab_e2e.sh): the synthetic model and the
# random token ids they run on. In: preset, layers, work, samples, seq_len and $1 the directory holding
# fp4c-synth. Out: name, model (made once per WORK, shallower when layers > 0), data (SAMPLES x SEQ_LEN ids)
# and tokens.
synth_setup() {
  local synth_build=$1
  name=$preset; [ "$layers" -gt 0 ] && name="$preset-${layers}l"
  model=$work/$name
  mkdir -p "$work"
  if [ ! -f "$model/config.json" ]; then
    local extra=(); [ "$layers" -gt 0 ] && extra=(--layers "$layers")
    "$synth_build/fp4c-synth" --preset "$preset" --out "$model" "${extra[@]}" > /dev/null
  fi
  data=$work/random-${samples}x${seq_len}.jsonl
  python3 "$(dirname "${BASH_SOURCE[0]}")/random_ids.py" "$data" "$samples" "$seq_len"
  tokens=$((samples * seq_len))
}
