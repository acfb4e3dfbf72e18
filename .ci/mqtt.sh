#!/usr/bin/env bash
# RPC over MQTT and ota-shadow against a real Mosquitto (Debian's `mosquitto`), as CI runs them:
# a broker on a free loopback port with a generated configuration, a virtual board on it, then
# `hil call` and `hil ota` with --port mqtt://127.0.0.1:PORT/DEVICE_ID, the time of a 1 MiB
# push, and the shadow scenarios on boards/virtual-mqtt.toml (whose fleet starts a broker of its
# own per trial). Everything this script starts is stopped when it exits, whatever happens.
# Needs target/debug/hil and target/debug/virtual-board (cargo build -p ota-hil -p ota-firmware).
set -euo pipefail
cd "$(dirname "$0")/.."

hil=target/debug/hil
board=target/debug/virtual-board
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# A free loopback port: one that nothing answers on.
port=""
for _ in $(seq 50); do
    candidate=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
        port=$candidate
        break
    fi
done
[ -n "$port" ] || { echo "no free loopback port for mosquitto" >&2; exit 2; }

printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\nmax_packet_size 2000000\n' \
    "$port" >"$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" 2>"$work/mosquitto.log" &
pids+=($!)

# Waits until FILE holds TEXT (at most 20 s), or fails saying what it waited for.
wait_for() {
    for _ in $(seq 200); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "waited 20 s for \"$2\" in $1:" >&2
    tail -20 "$1" >&2
    exit 2
}
wait_for "$work/mosquitto.log" " running"

device=ci-mqtt-1
"$hil" bundle --name app --version 1.0.0 --platform esp32 --sim-app healthy -o "$work/v1.zip" >/dev/null
"$hil" bundle --name app --version 2.0.0 --platform esp32 --sim-app never-commits -o "$work/v2.zip" >/dev/null
"$hil" bundle --name app --version 3.0.0 --platform esp32 --sim-app healthy --app-kib 1024 -o "$work/v3-1mib.zip" >/dev/null
printf '{"device": {"id": "%s"}, "mqtt": {"enable": true, "server": "127.0.0.1:%s"}}\n' "$device" "$port" >"$work/conf9.json"
"$board" --flash "$work/flash.bin" --platform esp32 --provision "$work/v1.zip" --serial none --http none \
    --conf9 "$work/conf9.json" >"$work/board.out" 2>"$work/board.log" &
pids+=($!)
wait_for "$work/board.log" "mqtt: subscribed as $device"

mqtt="mqtt://127.0.0.1:$port/$device"
echo "hil call --port $mqtt Sys.GetInfo"
"$hil" call --port "$mqtt" Sys.GetInfo

echo "hil ota --port $mqtt v2.zip (2.0.0, waits for its commit)"
"$hil" ota "$work/v2.zip" --port "$mqtt" --commit-timeout 300
wait_for "$work/board.out" "reboot:"
# The device reconnects from 2.0.0: its second subscription.
for _ in $(seq 200); do
    [ "$(grep -c "mqtt: subscribed as $device" "$work/board.log")" -ge 2 ] && break
    sleep 0.1
done
"$hil" call --port "$mqtt" OTA.GetBootState
"$hil" call --port "$mqtt" OTA.Commit

echo "a 1 MiB app (bundle $(stat -c %s "$work/v3-1mib.zip") bytes) over MQTT, 512-byte writes as mos sends them"
start=$(date +%s.%N)
"$hil" ota "$work/v3-1mib.zip" --port "$mqtt" --commit-timeout 0
end=$(date +%s.%N)
awk -v s="$start" -v e="$end" 'BEGIN { printf "1 MiB push over MQTT: %.2f s\n", e - s }'

echo "the shadow scenarios on a fleet with its own broker"
"$hil" run scenarios/shadow_fleet.toml scenarios/shadow_missed_commit.toml scenarios/shadow_bad_input.toml \
    --board boards/virtual-mqtt.toml --junit target/hil-mqtt-junit.xml --log-dir target/hil-mqtt-run
