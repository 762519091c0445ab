# Sourced (not run) by scripts/bench-realsize.sh and scripts/bench-imatrix.sh:
# the real-size checkpoints and the small helpers both benchmarks time with.
#
#   shape_checkpoint LLMQ SHAPES_DIR SHAPE   prints SHAPES_DIR/SHAPE, writing it first with
#                                            `llmq synth --shape SHAPE --layers 1` when absent
#   shape_layers SHAPE                       decoder layers of the whole model (32 if unknown)
#   json_get EXPR < JSON                     EXPR over j, the JSON on stdin's last line
#   cpu_line                                 date, cores and CPU model, for a heading
# The environment is the user's: nothing here sets OMP_* or OPENBLAS_*.

shape_checkpoint() {
    local dir=$2/$3
    [ -f "$dir/model.safetensors" ] || "$1" synth --shape "$3" --layers 1 "$dir" >/dev/null
    echo "$dir"
}

shape_layers() {
    case $1 in
        llama2-7b | llama3-8b) echo 32 ;;
        qwen2.5-7b) echo 28 ;;
        llama3-70b) echo 80 ;;
        *) echo 32 ;;
    esac
}

json_get() { python3 -c "import json,sys; j=json.loads(sys.stdin.read().strip().splitlines()[-1]); print($1)"; }

cpu_line() {
    echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
}
