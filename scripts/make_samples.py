"""Draw the app's sample photos (made here, so they are free to use): two rooms and a product shot, into s3lib/samples/.
They are simple on purpose: flat walls, a floor with planks, a window, a sofa; a bottle on a grey sweep."""
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

OUT = Path(__file__).resolve().parent.parent / "s3lib" / "samples"  # shipped with the package


def shaded(size, top, bottom):
    "A vertical gradient from `top` to `bottom` (RGB)."
    width, height = size
    t = np.linspace(0, 1, height)[:, None, None]
    rows = (np.array(top) * (1 - t) + np.array(bottom) * t).astype(np.uint8)
    return Image.fromarray(np.repeat(rows, width, axis=1))


def room(path, wall, floor, sofa, size=(960, 720)):
    width, height = size
    picture = shaded(size, wall, tuple(int(c * 0.82) for c in wall))
    draw = ImageDraw.Draw(picture)
    horizon = int(height * 0.68)
    floor_image = shaded((width, height - horizon), floor, tuple(int(c * 0.7) for c in floor))
    picture.paste(floor_image, (0, horizon))
    for x in range(0, width, 120): draw.line([(x, horizon), (x - 60, height)], fill=tuple(int(c * 0.6) for c in floor), width=3)
    draw.rectangle([int(width * 0.62), int(height * 0.14), int(width * 0.86), int(height * 0.5)], fill=(226, 236, 244), outline=(250, 250, 250), width=10)
    draw.line([(int(width * 0.74), int(height * 0.14)), (int(width * 0.74), int(height * 0.5))], fill=(250, 250, 250), width=8)
    draw.rounded_rectangle([int(width * 0.12), int(height * 0.5), int(width * 0.55), int(height * 0.78)], 26, fill=sofa)
    draw.rounded_rectangle([int(width * 0.14), int(height * 0.42), int(width * 0.53), int(height * 0.6)], 22, fill=tuple(int(c * 0.9) for c in sofa))
    draw.rectangle([int(width * 0.2), int(height * 0.2), int(width * 0.36), int(height * 0.36)], fill=(60, 90, 120), outline=(40, 30, 20), width=8)
    picture.filter(ImageFilter.GaussianBlur(0.6)).save(path, optimize=True)


def product(path, size=(800, 800)):
    width, height = size
    picture = shaded(size, (236, 236, 236), (196, 196, 196))
    draw = ImageDraw.Draw(picture)
    draw.ellipse([int(width * 0.3), int(height * 0.82), int(width * 0.7), int(height * 0.88)], fill=(170, 170, 170))
    draw.rounded_rectangle([int(width * 0.4), int(height * 0.3), int(width * 0.6), int(height * 0.85)], 30, fill=(40, 110, 80))
    draw.rectangle([int(width * 0.46), int(height * 0.18), int(width * 0.54), int(height * 0.32)], fill=(30, 80, 60))
    draw.rectangle([int(width * 0.41), int(height * 0.5), int(width * 0.59), int(height * 0.66)], fill=(240, 230, 200))
    picture.filter(ImageFilter.GaussianBlur(0.8)).save(path, optimize=True)


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    room(OUT / "interior-living-room.png", wall=(214, 204, 188), floor=(150, 108, 72), sofa=(72, 92, 122))
    room(OUT / "interior-bedroom.png", wall=(196, 206, 200), floor=(168, 136, 100), sofa=(150, 80, 70))
    product(OUT / "seller-bottle.png")
    print(sorted(p.name for p in OUT.iterdir()))
