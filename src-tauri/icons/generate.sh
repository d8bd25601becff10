#!/usr/bin/env bash
# Draws the console's icons (a ledger: three bars on a rounded square) with ImageMagick, and packs
# the macOS .icns from two of the PNGs. Run from anywhere: ./src-tauri/icons/generate.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

draw() { # draw SIZE FILE: the 256 px drawing scaled to SIZE, as 32-bit RGBA (Tauri requires RGBA)
    convert -size 256x256 xc:none \
        -fill '#17624f' -draw 'roundrectangle 8,8 247,247 44,44' \
        -fill '#ffffff' -draw 'roundrectangle 60,70 196,94 12,12' \
        -fill '#ffffff' -draw 'roundrectangle 60,116 170,140 12,12' \
        -fill '#f2c14e' -draw 'roundrectangle 60,162 140,186 12,12' \
        -resize "${1}x${1}" -strip "PNG32:$2"
}

draw 32 32x32.png
draw 128 128x128.png
draw 256 128x128@2x.png
draw 16 16x16.tmp.png
draw 48 48x48.tmp.png
convert 16x16.tmp.png 32x32.png 48x48.tmp.png 128x128@2x.png icon.ico
rm -f 16x16.tmp.png 48x48.tmp.png

# .icns: the magic and total length, then one (type, length, PNG data) entry per size.
python3 - <<'PY'
import struct
entries = [(b"ic07", open("128x128.png", "rb").read()), (b"ic08", open("128x128@2x.png", "rb").read())]
body = b"".join(kind + struct.pack(">I", 8 + len(data)) + data for kind, data in entries)
open("icon.icns", "wb").write(b"icns" + struct.pack(">I", 8 + len(body)) + body)
PY
