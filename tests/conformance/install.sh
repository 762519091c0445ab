# Sourced (not run) by tests/conformance/run.sh and scripts/bench-llamacpp.sh:
# installs node-llama-cpp (the prebuilt llama.cpp binaries it ships) from the
# npm registry into one folder, once per version. Never builds or downloads
# llama.cpp itself.
#
#   llamacpp_node_ok                 node >= 20 and npm are on PATH
#   llamacpp_install WORK VERSION    node-llama-cpp@VERSION in WORK/node_modules
#
# Both return 0 on success; on failure they return 1 and leave a one-line
# reason in $llamacpp_problem (the caller decides whether to skip or fail).

llamacpp_problem=

llamacpp_node_ok() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        llamacpp_problem="node/npm not installed (Debian: apt-get install nodejs npm; node >= 20 needed)"
        return 1
    fi
    local major
    major=$(node -p 'process.versions.node.split(".")[0]')
    if [ "$major" -lt 20 ]; then
        llamacpp_problem="node $(node --version) is older than node-llama-cpp's minimum (20)"
        return 1
    fi
}

llamacpp_install() {
    local work=$1 version=$2 platform installed
    # node-llama-cpp plus only this platform's prebuilt binaries (the optional
    # CUDA/Vulkan packages are hundreds of MB).
    export NODE_LLAMA_CPP_SKIP_DOWNLOAD=true
    case "$(node -p 'process.platform + "-" + process.arch')" in
        linux-x64) platform=linux-x64 ;;
        linux-arm64) platform=linux-arm64 ;;
        darwin-arm64) platform=mac-arm64-metal ;;
        darwin-x64) platform=mac-x64 ;;
        win32-x64) platform=win-x64 ;;
        *) llamacpp_problem="no prebuilt node-llama-cpp binaries for $(node -p 'process.platform + "-" + process.arch')"
           return 1 ;;
    esac
    mkdir -p "$work"
    installed=$(node -p "try { require('$work/node_modules/node-llama-cpp/package.json').version } catch (e) { '' }" 2>/dev/null)
    [ "$installed" = "$version" ] && return 0
    echo "installing node-llama-cpp@$version (@node-llama-cpp/$platform) from the npm registry into $work"
    [ -f "$work/package.json" ] || echo '{"name":"llmq-conformance","private":true,"type":"module"}' >"$work/package.json"
    if ! (cd "$work" && npm install --no-audit --no-fund --omit=optional --loglevel=error \
            "node-llama-cpp@$version" "@node-llama-cpp/$platform@$version" >"$work/npm.log" 2>&1); then
        tail -5 "$work/npm.log"
        llamacpp_problem="npm install node-llama-cpp@$version failed (see $work/npm.log)"
        return 1
    fi
}
