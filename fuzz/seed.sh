#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ (git-ignored) from the real bundles in ../shared/real-bundles/
# (beside the checkout; never copied into the repository), from small bundles `hil bundle`
# builds, from the curl captures of firmware-under-test/proto/tests/data/curl/ and from a few
# RPC frames. Every seed gets the input header of fuzz/src/lib.rs before it, except the
# manifest target's, which take manifest.json as it is.
# Run from anywhere: bash fuzz/seed.sh. Running it again replaces the seeds, keeps what fuzzing added.
set -euo pipefail

fuzz="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$fuzz/.." && pwd)"
real="${REAL_BUNDLES:-$root/../shared/real-bundles}"
curl_captures="$root/firmware-under-test/proto/tests/data/curl"
corpus="$fuzz/corpus"
mkdir -p "$corpus"/{updater,rpc,http,manifest}

# seed TARGET NAME HEADER_HEX FILE: HEADER (two hex bytes: flags, one chunk length) then FILE.
seed() {
    local target="$1" name="$2" header="$3" file="$4"
    { printf "\\x${header:0:2}\\x${header:2:2}"; cat "$file"; } > "$corpus/$target/seed-$name"
}

# manifest_of ZIP: the bundle's manifest.json, wherever in the archive it sits.
manifest_of() {
    local entry
    # awk reads the whole listing: a reader that quits at the first match (grep -m1) can make
    # unzip die of SIGPIPE, which pipefail turns into this script's failure.
    entry="$(unzip -Z1 "$1" | awk '/manifest\.json$/ && !found { print; found = 1 }')"
    unzip -p "$1" "$entry"
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The real bundles: a ccm_host device (updater flag bit 0: header flags 08) in 65-byte chunks,
# and in 8 KiB chunks (length byte ff).
if [ -d "$real" ]; then
    for zip in "$real"/*.zip; do
        base="$(basename "$zip" .zip)"
        seed updater "real-$base" 0840 "$zip"
        seed updater "real-$base-big" 08ff "$zip"
        manifest_of "$zip" > "$corpus/manifest/seed-real-$base"
    done
else
    echo "no real bundles at $real: seeding without them" >&2
fi

# Small esp32 bundles from `hil bundle` (the fuzz layout's slots are 64 KiB app, 16 KiB fs):
# with an fs part and in a folder, as fixtures/make.sh makes them, and without an fs part.
hil() {
    (cd "$root" && cargo run -q -p ota-hil --bin hil -- "$@")
}
hil bundle --name demo --version 2.0.0 --build-id fuzz-2.0.0 --platform esp32 --sim-app healthy \
    --app-kib 8 --fs-dir "$root/fixtures/fs-v2" --fs-kib 8 --folder -o "$work/demo-folder-fs.zip" > /dev/null
hil bundle --name demo --version 1.0.0 --build-id fuzz-1.0.0 --platform esp32 --sim-app healthy \
    --app-kib 4 -o "$work/demo-same-version.zip" > /dev/null
hil bundle --name demo --version 3.0.0 --platform esp32 --sim-app crashes-at-boot \
    --app-kib 4 -o "$work/demo-app-only.zip" > /dev/null
for zip in "$work"/*.zip; do
    base="$(basename "$zip" .zip)"
    seed updater "$base" 0040 "$zip"
    manifest_of "$zip" > "$corpus/manifest/seed-$base"
done
# The same version as the provisioned 1.0.0, with ignore_same_version (flag bit 2: 20).
seed updater demo-same-version-ignored 2040 "$work/demo-same-version.zip"

# The curl captures, and one POST /update carrying a bundle.
for http in "$curl_captures"/*.http; do
    seed http "$(basename "$http" .http)" 0040 "$http"
done
boundary=------------------------fuzzboundary0001
{
    body="$work/body"
    {
        printf -- '--%s\r\nContent-Disposition: form-data; name="commit_timeout"\r\n\r\n300\r\n' "$boundary"
        printf -- '--%s\r\nContent-Disposition: form-data; name="file"; filename="fw.zip"\r\n' "$boundary"
        printf 'Content-Type: application/zip\r\n\r\n'
        cat "$work/demo-app-only.zip"
        printf -- '\r\n--%s--\r\n' "$boundary"
    } > "$body"
    printf 'POST /update HTTP/1.1\r\nHost: 192.168.4.1\r\nContent-Length: %d\r\n' "$(wc -c < "$body")"
    printf 'Content-Type: multipart/form-data; boundary=%s\r\n\r\n' "$boundary"
    cat "$body"
} > "$work/post_update_bundle.http"
seed http post_update_bundle 0040 "$work/post_update_bundle.http"

# RPC frames as a UART carries them (max_frame_bytes 8192: flags 18): plain, with a CRC, wrapped in """, an EOT, noise.
rpc() {
    printf '%b' "$2" > "$work/rpc"
    seed rpc "$1" 1840 "$work/rpc"
}
rpc plain '{"id":1,"method":"Sys.GetInfo"}\n'
rpc params '{"id":2,"src":"mos","dst":"esp32_fuzz","method":"OTA.Write","params":{"data":"UEsDBA=="}}\n'
rpc crc '{"id":3,"method":"OTA.Status"}5d3c2b1a\n'
rpc quotes '"""{"id":4,"method":"OTA.Commit","params":{}}"""\n'
rpc eot '"""\x04"""\n\x04\n'
rpc noise 'I (123) boot: log line\n  \n{"id":5,"method":"OTA.Begin","params":{"size":1000}}\n'
rpc response '{"id":6,"src":"esp32_fuzz","result":{"state":0}}\n'

for target in updater rpc http manifest; do
    echo "$target: $(ls "$corpus/$target" | wc -l) files in fuzz/corpus/$target"
done
