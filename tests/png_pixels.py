"""A small PNG reader for the tests (8-bit RGB / RGBA / grey, not interlaced): no image library needed."""

from __future__ import annotations

import struct
import zlib


def read_png(path) -> tuple[int, int, list[tuple[int, int, int]]]:
    """(width, height, RGB pixels row-major) of a PNG file."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG file")
    pos, chunks, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, color_type, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(color_type)
    if depth != 8 or channels is None or interlace:
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {color_type}, interlace {interlace}")
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    previous = bytearray(stride)
    pixels = []
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = previous[i]
            c = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        previous = line
        for x in range(width):
            px = line[x * channels:(x + 1) * channels]
            pixels.append((px[0], px[0], px[0]) if channels <= 2 else (px[0], px[1], px[2]))
    return width, height, pixels


def count_colored(pixels) -> tuple[int, int]:
    """(reddish, bluish) pixel counts: the heatmap's positive and negative token backgrounds."""
    red = sum(1 for r, g, b in pixels if r > 150 and r - g > 60 and r - b > 60)
    blue = sum(1 for r, g, b in pixels if b > 150 and b - r > 60 and b - g > 40)
    return red, blue
