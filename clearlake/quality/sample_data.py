"""Labelled sample images made reproducibly from real photographs in installed packages.

The machine has no internet, so the demo/training set is built from the
photographs that scikit-learn and scikit-image ship: 20 sources, of which six
are inherently smooth content (:data:`SMOOTH_SOURCES`: the moon, a retina and
a retina detail, phase-contrast microscopy, a scanned page, handwriting on
paper) — good images that look blurry to absolute measures of detail, which
the classifier must learn not to flag. No drawings or synthetic patterns.
SciPy's ``datasets`` and imageio's standard images would need a download;
OpenCV and Pillow wheels ship no photographs. The two motorcycle photographs
are a stereo pair of one scene, so they share one source id: a split by source
never puts one in training and the other in test.

Every image starts as a *view* of a photograph: a random crop (short side
between 60 % and 100 % of the photo's, aspect ratio 0.75–1.33) downscaled with
``INTER_AREA`` so that its short side lies between ``min_side`` (256 px) and
the crop's own short side — never upscaled, since upscaling blurs. Then, per
class (ranges are uniform unless stated), with generator ``a``:

``good``
    the view itself.
``blurry`` (sub-labels)
    ``blurry_gaussian``: Gaussian blur, σ 1–5 px;
    ``blurry_motion``: linear motion blur, length 5–25 px, angle 0–180°;
    ``blurry_defocus``: defocus (anti-aliased disk) blur, radius 1.5–6 px.
``moire`` (sub-labels)
    ``moire_grating``: one or two fine sinusoidal gratings (period 2.2–8 px,
    angle 0–180°, second grating 1–12° off the first) multiplied into or added
    to the view, amplitude 5–25 %;
    ``moire_screen``: the view shown on a simulated RGB-stripe display (each
    pixel 3–6 screen px with a dark line between pixels), blurred by the
    camera's optics (σ 0.2–0.35 of the pitch, which leaves 9–45 % of the
    grid's contrast) and re-sampled without antialiasing
    by a camera at a slightly different pitch (2–12 % off) and angle (0–6°)
    that frames the central 88 % of the screen;
    ``moire_halftone``: the view at 3–4× through a rotated dot screen (period
    2.5–6 fine px, angle 0–90°), softened (σ 0.5–1.5 fine px), then decimated
    without antialiasing (aliasing);
    ``moire_banding``: as ``moire_screen``, then the luma is replaced by that of
    the same shot without the pixel grid and the chroma is low-passed (Gaussian
    σ 1.5–3 px), as a phone's chroma smoothing does: the fine grid is gone and
    the moiré survives only as low-frequency colour bands.

With probability 0.3 an image gets sensor-like Gaussian noise (σ 1–3 grey
levels) after its degradation, whatever its class. Images are saved as JPEG
with quality 80–95.

Generator ``b`` (:func:`_degrade_b`, :data:`SUBLABELS_B`) is a family written
apart from ``a``, to train and to test generalisation on degradations ``a``
never makes: box, upscaling, camera-shake and ring-shaped defocus blur;
aliased weaves, Bayer-mosaic false colour, rotated LCD stripes and scanned CMY
halftone prints as moiré; soft video-like frames (upscaled 1.2–1.6×) and
sharpened or tone-mapped views as good; signal-dependent noise, PNG or JPEG
quality 55–98.

Generator ``c`` (:func:`_degrade_c`, :data:`SUBLABELS_C`), written apart from both,
is a further held-out test (``clearlake evaluate --test-on``): polygonal-aperture,
decelerating arc-motion, drop-pixels-then-Lanczos and field-dependent blur; moiré
made by resampling a photographed delta-triangle panel, a line-screen print and a
fine mesh under perspective (no added sinusoid); heavily JPEG-compressed images
(quality 30–60) among the good ones; Poisson shot noise, 4:4:4 or 4:2:0 JPEG
quality 70–97 or PNG.

Generator ``d`` (:func:`_degrade_d`, :data:`SUBLABELS_D`), for training only, written from
how real pictures degrade (not from ``c``'s errors, which stays a fair test): a phone's
denoise-and-sharpen, shallow depth of field and haze among the good images; defocus with
low-light noise added after it, blur denoised and sharpened hard, and low-bitrate video
blocks (8×8 DCT, lowest frequencies kept, deblocked) as blur; a garment's fine weave
aliased over part of the frame, two layers of fine net beating, and a grey newspaper
halftone scanned at a non-integer scale as moiré; luma and chroma noise, WebP or JPEG.

Generator ``e`` (:func:`_degrade_e`, :data:`SUBLABELS_E`), for training only, written the
same way, with kinds none of ``a``–``d`` makes: a noisy night shot, vignetting with
lateral chromatic aberration, and a phone's local tone mapping among the good images; a
soft picture shrunk and enlarged back by a non-integer factor, blur saved as low-quality
JPEG, and a subject moving during a long handheld exposure as blur; a computer screen
photographed through a Bayer filter, receding blinds or railings, and a distant brick wall
as moiré; luma and chroma noise, PNG or JPEG. It has no missed focus (part of the frame
sharp, the rest defocused, labelled blurry): that is ``d``'s ``good_bokeh`` labelled the
other way, and no no-reference measure knows which part is the subject; the contradiction
would teach the model that low detail means blur, the false alarm on smooth content.

``labels.csv`` has columns ``path,label,sublabel,source,content`` (``path``
relative to the output folder; ``content`` is ``smooth`` or ``photo``). The
same seed gives the same files: every source photograph has its own random
stream derived from the seed, the generator and its id, so adding a source
leaves the others' images unchanged.

The packaged default model is trained on ``a``, ``b``, ``d`` and ``e`` at seeds 0 and 1;
``c`` is kept for testing only (the README's "Regenerate the packaged model").
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MIN_SIDE = 256
JPEG_QUALITY = (80, 95)
NOISE_PROBABILITY = 0.3
NOISE_SIGMA = (1.0, 3.0)
GAUSSIAN_SIGMA = (1.0, 5.0)
MOTION_LENGTH = (5.0, 25.0)
DEFOCUS_RADIUS = (1.5, 6.0)
GRATING_PERIOD = (2.2, 8.0)
GRATING_AMPLITUDE = (0.05, 0.25)
SCREEN_PITCH = (3, 6)
SCREEN_PITCH_OFFSET = (0.02, 0.12)
SCREEN_ANGLE = (0.0, 6.0)
SCREEN_OPTICS = (0.2, 0.35)  # lens blur σ as a fraction of the screen pitch
BANDING_CHROMA_SIGMA = (1.5, 3.0)
HALFTONE_PERIOD = (2.5, 6.0)

SUBLABELS: dict[str, tuple[str, ...]] = {
    "good": ("good",),
    "blurry": ("blurry_gaussian", "blurry_motion", "blurry_defocus"),
    "moire": ("moire_grating", "moire_screen", "moire_halftone", "moire_banding"),
}


@dataclass(frozen=True)
class Source:
    """One source photograph: an id, the files it comes from, and its kind of content.

    ``smooth`` marks inherently smooth content (astronomy, retina and microscopy,
    text and document scans): good images of it have little fine detail, which
    the classifier must not take for blur.
    """

    id: str
    paths: tuple[Path, ...]
    smooth: bool = False


#: scikit-image photographs of inherently smooth content (see :class:`Source`).
SMOOTH_SOURCES: dict[str, tuple[str, ...]] = {
    "cell": ("cell.png",),  # phase-contrast microscopy
    "microaneurysms": ("microaneurysms.png",),  # retina detail, 102 px
    "moon": ("moon.png",),
    "page": ("page.png",),  # a scanned book page
    "retina": ("retina.jpg",),  # fundus photograph, mostly black surround
    "text": ("text.png",),  # handwriting photographed on paper
}


def find_sources() -> list[Source]:
    """The photographs available offline in installed packages (sorted by id).

    scikit-image's and scikit-learn's photographs (and matplotlib's, when it is
    installed with its data), including the smooth-content ones of
    :data:`SMOOTH_SOURCES`. Left out: drawings and synthetic images (``logo``,
    ``horse``, ``color``, ``chessboard``, ``phantom``), the motion-blurred
    ``clock_motion`` (not a good image), and images too small to crop
    (``lfw_subset`` faces are 25 px). SciPy's ``datasets`` and imageio's
    standard images need a download (pooch / network) and are not used.

    Returns:
        Sources whose files exist on disk; scikit-image data that would need a
        download (pooch) is skipped.
    """
    import skimage.data
    import sklearn.datasets

    sk = Path(skimage.data.__file__).parent
    skl = Path(sklearn.datasets.__file__).parent / "images"
    candidates = {
        "astronaut": [sk / "astronaut.png"],
        "brick": [sk / "brick.png"],
        "camera": [sk / "camera.png"],
        "chelsea": [sk / "chelsea.png"],
        "coffee": [sk / "coffee.png"],
        "coins": [sk / "coins.png"],
        "grass": [sk / "grass.png"],
        "gravel": [sk / "gravel.png"],
        "hubble_deep_field": [sk / "hubble_deep_field.jpg"],
        "ihc": [sk / "ihc.png"],
        "motorcycle": [sk / "motorcycle_left.png", sk / "motorcycle_right.png"],
        "rocket": [sk / "rocket.jpg"],
        "china": [skl / "china.jpg"],
        "flower": [skl / "flower.jpg"],
    }
    candidates.update({sid: [sk / f for f in files] for sid, files in SMOOTH_SOURCES.items()})
    # matplotlib's sample photographs, when it is installed with its data.
    try:
        import matplotlib

        mpl = Path(matplotlib.get_data_path()) / "sample_data"
        candidates["grace_hopper"] = [mpl / "grace_hopper.jpg"]
    except ImportError:
        pass
    sources = []
    for sid, paths in sorted(candidates.items()):
        present = tuple(p for p in paths if p.is_file())
        if present:
            sources.append(Source(sid, present, smooth=sid in SMOOTH_SOURCES))
    return sources


def generate(
    out_dir: str | Path,
    *,
    seed: int = 0,
    per_class: int = 8,
    sources: Sequence[str] | None = None,
    min_side: int = MIN_SIDE,
    generator: str = "a",
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write labelled images and ``labels.csv`` under ``out_dir``.

    Args:
        out_dir: output folder (created).
        seed: random seed; the same seed gives the same files.
        per_class: images per class (good, blurry, moire) per source photograph.
        sources: restrict to these source ids (default: all found).
        min_side: smallest short side of a view in px.
        generator: ``"a"`` (the degradations above), ``"b"``, ``"c"``, ``"d"`` or ``"e"``
            (independent families, see :data:`SUBLABELS_B`, :data:`SUBLABELS_C`,
            :data:`SUBLABELS_D` and :data:`SUBLABELS_E`); file names carry the generator.
        progress: called with (done, total) after each image.

    Returns:
        The path of ``labels.csv`` (columns ``path,label,sublabel,source,content``;
        ``content`` is ``smooth`` or ``photo``, see :class:`Source`).

    Raises:
        ValueError: when an asked-for source or the generator is unknown, or no
            source is available.
    """
    if generator not in GENERATORS:
        raise ValueError(f"unknown generator {generator!r}; known: {sorted(GENERATORS)}")
    sublabels, degrade, finish = GENERATORS[generator]
    out = Path(out_dir)
    available = find_sources()
    if sources is not None:
        unknown = set(sources) - {s.id for s in available}
        if unknown:
            raise ValueError(f"unknown or unavailable sources: {sorted(unknown)}")
        available = [s for s in available if s.id in set(sources)]
    if not available:
        raise ValueError("no source photographs found in the installed packages")
    total = len(available) * per_class * len(sublabels)
    rows: list[tuple[str, str, str, str, str]] = []
    done = 0
    tag = "" if generator == "a" else f"{generator}-"
    for source in available:
        # Each source's stream depends on the seed, the generator and its id only:
        # adding a source never changes the others' images.
        rng = np.random.default_rng([seed, _stable_hash(generator), _stable_hash(source.id)])
        photos = [_read(p) for p in source.paths]
        content = "smooth" if source.smooth else "photo"
        n = 0
        for label, subs in sublabels.items():
            (out / label).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                sub = subs[i % len(subs)]
                photo = photos[int(rng.integers(len(photos)))]
                img = degrade(_view(photo, rng, min_side), sub, rng)
                data, ext = finish(img, rng)
                rel = f"{label}/{tag}{source.id}-{n:03d}{ext}"
                n += 1
                (out / rel).write_bytes(data)
                rows.append((rel, label, sub, source.id, content))
                done += 1
                if progress is not None:
                    progress(done, total)
    labels = out / "labels.csv"
    with labels.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("path", "label", "sublabel", "source", "content"))
        writer.writerows(rows)
    return labels


def _finish_a(img: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    """Generator a's capture: sensor noise with probability 0.3, JPEG quality 80–95."""
    if rng.random() < NOISE_PROBABILITY:
        sigma = rng.uniform(*NOISE_SIGMA)
        img = _to_u8(img.astype(np.float32) + rng.normal(0, sigma, img.shape))
    quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
    return _encode(img, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, quality]), ".jpg"


def _encode(img: np.ndarray, ext: str, params: list[int]) -> bytes:
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise RuntimeError(f"{ext} encoding failed")
    return buf.tobytes()


# --- views and degradations ---------------------------------------------------------


def _read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise RuntimeError(f"cannot read source photograph {path}")
    if img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


def _view(photo: np.ndarray, rng: np.random.Generator, min_side: int) -> np.ndarray:
    """A random crop, downscaled (never upscaled) to a short side ≥ min_side."""
    h, w = photo.shape[:2]
    short = min(h, w)
    lo = max(min_side, int(0.6 * short))
    crop_short = int(rng.integers(min(lo, short), short + 1))
    aspect = rng.uniform(0.75, 1.33)
    ch, cw = crop_short, round(crop_short * aspect)
    if cw > w or ch > h:  # keep the crop inside the photo
        ch, cw = min(ch, h), min(cw, w)
    y = int(rng.integers(0, h - ch + 1))
    x = int(rng.integers(0, w - cw + 1))
    crop = photo[y : y + ch, x : x + cw]
    target_short = int(rng.integers(min(min_side, min(ch, cw)), min(ch, cw) + 1))
    scale = target_short / min(ch, cw)
    if scale < 1.0:
        size = (max(1, round(cw * scale)), max(1, round(ch * scale)))
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(crop)


def _degrade(img: np.ndarray, sub: str, rng: np.random.Generator) -> np.ndarray:
    if sub == "good":
        return img
    if sub == "blurry_gaussian":
        return cv2.GaussianBlur(img, (0, 0), rng.uniform(*GAUSSIAN_SIGMA))
    if sub == "blurry_motion":
        kernel = _motion_kernel(rng.uniform(*MOTION_LENGTH), rng.uniform(0, 180))
        return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT)
    if sub == "blurry_defocus":
        kernel = _disk_kernel(rng.uniform(*DEFOCUS_RADIUS))
        return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT)
    if sub == "moire_grating":
        return _grating(img, rng)
    if sub == "moire_screen":
        return _screen(img, rng, banding=False)
    if sub == "moire_banding":
        return _screen(img, rng, banding=True)
    if sub == "moire_halftone":
        return _halftone(img, rng)
    raise ValueError(f"unknown sub-label {sub!r}")


def _kernel_from(supersampled: np.ndarray, size: int) -> np.ndarray:
    """A blur kernel of size×size from its supersampled drawing: area-averaged, sum 1."""
    kernel = cv2.resize(supersampled, (size, size), interpolation=cv2.INTER_AREA)
    return kernel / kernel.sum()


def _motion_kernel(length: float, angle_deg: float) -> np.ndarray:
    """Anti-aliased line of `length` px at `angle_deg`, normalised to sum 1."""
    size = int(np.ceil(length)) | 1
    ss = 8  # supersampling
    canvas = np.zeros((size * ss, size * ss), np.float32)
    c = (size * ss - 1) / 2
    dx = np.cos(np.radians(angle_deg)) * (length * ss - 1) / 2
    dy = np.sin(np.radians(angle_deg)) * (length * ss - 1) / 2
    p0 = (round(c - dx), round(c - dy))
    p1 = (round(c + dx), round(c + dy))
    cv2.line(canvas, p0, p1, 1.0, thickness=ss, lineType=cv2.LINE_AA)
    return _kernel_from(canvas, size)


def _disk_kernel(radius: float) -> np.ndarray:
    """Anti-aliased disk of `radius` px (a defocused lens's point spread), sum 1."""
    size = 2 * int(np.ceil(radius)) + 1
    ss = 8
    yy, xx = np.mgrid[0 : size * ss, 0 : size * ss]
    c = (size * ss - 1) / 2
    disk = ((yy - c) ** 2 + (xx - c) ** 2 <= (radius * ss) ** 2).astype(np.float32)
    return _kernel_from(disk, size)


def _grating(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(*GRATING_PERIOD)
    amp = rng.uniform(*GRATING_AMPLITUDE)
    wave = np.cos(
        2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + rng.uniform(0, 6.3)
    )
    if rng.random() < 0.5:  # a second grating slightly rotated: the classic beat pattern
        theta2 = theta + np.radians(rng.uniform(1, 12)) * rng.choice([-1, 1])
        period2 = period * rng.uniform(0.95, 1.05)
        wave = 0.5 * (
            wave + np.cos(2 * np.pi * (xx * np.cos(theta2) + yy * np.sin(theta2)) / period2)
        )
    f = img.astype(np.float32)
    wave = wave[..., None] if f.ndim == 3 else wave
    out = f * (1 + amp * wave) if rng.random() < 0.5 else f + 255 * amp * 0.5 * wave
    return _to_u8(out)


def _screen(img: np.ndarray, rng: np.random.Generator, banding: bool) -> np.ndarray:
    """Photograph of the image shown on an RGB-stripe display."""
    colour = img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    h, w = colour.shape[:2]
    pitch = int(rng.integers(SCREEN_PITCH[0], SCREEN_PITCH[1] + 1))
    # Each image pixel becomes pitch×pitch screen px: B, G, R vertical stripes, dark last row.
    screen = cv2.resize(colour, (w * pitch, h * pitch), interpolation=cv2.INTER_NEAREST)
    screen = screen.astype(np.float32)
    mask = np.zeros((pitch, pitch, 3), np.float32)
    edges = np.linspace(0, pitch, 4).round().astype(int)
    for c in range(3):  # BGR order: R stripe on the left as on most panels
        mask[:, edges[2 - c] : edges[3 - c], c] = 1.0
    mask[-1, :, :] *= 0.25
    gain = 3.0 * rng.uniform(0.8, 1.0)
    optics = pitch * rng.uniform(*SCREEN_OPTICS)
    # The camera: slightly different pitch and a small rotation, point-sampled; it
    # frames the central 88 % of the screen, so the rotated view never leaves it.
    off = rng.uniform(*SCREEN_PITCH_OFFSET) * rng.choice([-1, 1])
    angle = rng.uniform(*SCREEN_ANGLE) * rng.choice([-1, 1])
    out_w, out_h = round(w * 0.88), round(h * 0.88)
    m = cv2.getRotationMatrix2D((w * pitch / 2, h * pitch / 2), angle, (1 + off) / pitch)
    m[0, 2] += out_w / 2 - w * pitch / 2
    m[1, 2] += out_h / 2 - h * pitch / 2

    def shoot(plane: np.ndarray) -> np.ndarray:
        plane = cv2.GaussianBlur(plane, (0, 0), optics)
        return cv2.warpAffine(
            plane, m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )

    shot = shoot(screen * np.tile(mask, (h, w, 1)) * gain)
    if banding:
        # The camera's pipeline smooths chroma far more than luma: the fine grid
        # and its luma beat are gone, the colour beat survives as broad bands.
        clean = cv2.cvtColor(_to_u8(shoot(screen * rng.uniform(0.8, 1.0))), cv2.COLOR_BGR2YCrCb)
        ycc = cv2.cvtColor(_to_u8(shot), cv2.COLOR_BGR2YCrCb).astype(np.float32)
        sigma = rng.uniform(*BANDING_CHROMA_SIGMA)
        chroma = cv2.GaussianBlur(ycc[..., 1:], (0, 0), sigma)
        mixed = np.dstack([clean[..., 0].astype(np.float32), chroma])
        return cv2.cvtColor(_to_u8(mixed), cv2.COLOR_YCrCb2BGR)
    return _to_u8(shot)  # a photographed grey picture is a colour photograph


def _halftone(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dot-screen the image at k× then decimate without antialiasing."""
    k = int(rng.integers(3, 5))
    h, w = img.shape[:2]
    big = cv2.resize(img, (w * k, h * k), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    yy, xx = np.mgrid[0 : h * k, 0 : w * k].astype(np.float32)
    theta = np.radians(rng.uniform(0, 90))
    period = rng.uniform(*HALFTONE_PERIOD)
    u = (xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period
    v = (-xx * np.sin(theta) + yy * np.cos(theta)) * 2 * np.pi / period
    dots = 0.5 + 0.25 * (np.cos(u) + np.cos(v))  # in [0, 1]: the screen's threshold
    if big.ndim == 3:
        dots = dots[..., None]
    ink = (big / 255.0 > dots).astype(np.float32) * 255.0  # threshold: ink dots grow with tone
    ink = cv2.GaussianBlur(ink, (0, 0), rng.uniform(0.5, 1.5))  # dot gain / scanner optics
    phase = (int(rng.integers(k)), int(rng.integers(k)))
    return _to_u8(ink[phase[0] :: k, phase[1] :: k][:h, :w])


def _to_u8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _stable_hash(text: str) -> int:
    return int.from_bytes(text.encode()[:8].ljust(8, b"\0"), "little")


# --- generator b: an independent family of degradations -------------------------------

#: Generator b's sub-labels (see :func:`_degrade_b`).
SUBLABELS_B: dict[str, tuple[str, ...]] = {
    "good": ("good", "good_soft"),
    "blurry": ("blurry_box", "blurry_upscale", "blurry_shake", "blurry_ring"),
    "moire": ("moire_alias", "moire_bayer", "moire_lcd", "moire_print"),
}
SOFT_UPSCALE = (1.2, 1.6)
BOX_SIZE = (4, 12)
UPSCALE_FACTOR = (2.5, 5.0)
SHAKE_EXTENT = (7, 25)
RING_RADIUS = (2.5, 7.0)
ALIAS_PERIOD = (1.3, 3.5)  # in fine px, before decimation by 2–4
BAYER_PERIOD = (1.7, 3.2)
LCD_PITCH = (2.0, 5.0)
LCD_ANGLE = (4.0, 30.0)
PRINT_PERIOD = (1.6, 3.2)  # output px
B_NOISE_PROBABILITY = 0.4
B_PNG_PROBABILITY = 0.25
B_JPEG_QUALITY = (55, 98)


def _degrade_b(img: np.ndarray, sub: str, rng: np.random.Generator) -> np.ndarray:
    """Generator b, written apart from a to test generalisation.

    ``good``: as is, possibly with a camera's unsharp mask or a tone curve;
    ``good_soft``: a video-like frame, the view shrunk then upscaled 1.2–1.6×
    (bicubic) back, as 720p shown at 1080p; ``blurry_box``: box filter 4–12 px;
    ``blurry_upscale``: shrunk 2.5–5× then upscaled (bilinear); ``blurry_shake``:
    a random-walk camera-shake kernel 7–25 px across; ``blurry_ring``: an annular
    (catadioptric / aberrated) defocus kernel, radius 2.5–7 px; ``moire_alias``:
    a woven texture at 2–4× laid over the view, decimated without antialiasing;
    ``moire_bayer``: a fine grating near Nyquist sampled through an RGGB colour
    filter array and demosaiced (false colour); ``moire_lcd``: a screen with
    horizontal RGB stripes photographed 4–30° rotated; ``moire_print``: a CMY
    halftone print (three rotated dot screens) scanned with area averaging.
    """
    h, w = img.shape[:2]
    if sub == "good":
        if rng.random() < 0.4:
            amount = rng.uniform(0.3, 1.0)
            soft = cv2.GaussianBlur(img, (0, 0), 1.0).astype(np.float32)
            img = _to_u8(img.astype(np.float32) * (1 + amount) - soft * amount)
        if rng.random() < 0.3:
            gamma = rng.uniform(0.8, 1.25)
            img = _to_u8(255.0 * (img.astype(np.float32) / 255.0) ** gamma)
        return img
    if sub == "good_soft":
        f = rng.uniform(*SOFT_UPSCALE)
        small = cv2.resize(img, (max(8, round(w / f)), max(8, round(h / f))),
                           interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    if sub == "blurry_box":
        k = int(rng.integers(BOX_SIZE[0], BOX_SIZE[1] + 1))
        return cv2.blur(img, (k, k), borderType=cv2.BORDER_REFLECT)
    if sub == "blurry_upscale":
        f = rng.uniform(*UPSCALE_FACTOR)
        small = cv2.resize(img, (max(4, round(w / f)), max(4, round(h / f))),
                           interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if sub == "blurry_shake":
        kernel = _shake_kernel(int(rng.integers(SHAKE_EXTENT[0], SHAKE_EXTENT[1] + 1)), rng)
        return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT)
    if sub == "blurry_ring":
        kernel = _ring_kernel(rng.uniform(*RING_RADIUS))
        return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT)
    if sub == "moire_alias":
        return _alias(img, rng)
    if sub == "moire_bayer":
        return _bayer(img, rng)
    if sub == "moire_lcd":
        return _lcd(img, rng)
    if sub == "moire_print":
        return _print_scan(img, rng)
    raise ValueError(f"unknown sub-label {sub!r}")


def _finish_b(img: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    """Generator b's capture: signal-dependent noise (p 0.4); PNG (p 0.25) or JPEG 55–98."""
    if rng.random() < B_NOISE_PROBABILITY:
        f = img.astype(np.float32)
        sigma = np.sqrt(rng.uniform(0.02, 0.12) * f + rng.uniform(0.5, 2.0) ** 2)
        img = _to_u8(f + rng.standard_normal(img.shape).astype(np.float32) * sigma)
    if rng.random() < B_PNG_PROBABILITY:
        return _encode(img, ".png", []), ".png"
    quality = int(rng.integers(B_JPEG_QUALITY[0], B_JPEG_QUALITY[1] + 1))
    return _encode(img, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, quality]), ".jpg"


def _shake_kernel(extent: int, rng: np.random.Generator) -> np.ndarray:
    """A camera-shake path: a smoothed random walk drawn into an extent×extent box."""
    steps = 64
    velocity = np.cumsum(rng.normal(0, 1, (steps, 2)), axis=0)
    path = np.cumsum(velocity, axis=0)
    path -= path.min(axis=0)
    path *= (extent - 1) / max(float(path.max()), 1e-6)
    ss = 4
    canvas = np.zeros((extent * ss, extent * ss), np.float32)
    pts = np.rint(path * ss + ss / 2).astype(np.int32)
    cv2.polylines(canvas, [pts.reshape(-1, 1, 2)], False, 1.0, thickness=ss, lineType=cv2.LINE_AA)
    return _kernel_from(canvas, extent)


def _ring_kernel(radius: float) -> np.ndarray:
    """A disk of `radius` px whose inner 55 % passes 40 % (a bright-rimmed bokeh), sum 1."""
    size = 2 * int(np.ceil(radius)) + 1
    ss = 8
    yy, xx = np.mgrid[0 : size * ss, 0 : size * ss]
    c = (size * ss - 1) / 2
    r2 = ((yy - c) ** 2 + (xx - c) ** 2) / (ss * ss)
    ring = (r2 <= radius**2).astype(np.float32) * np.where(r2 < (0.55 * radius) ** 2, 0.4, 1.0)
    return _kernel_from(ring.astype(np.float32), size)


def _fine(img: np.ndarray, k: int) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.resize(img, (w * k, h * k), interpolation=cv2.INTER_LINEAR).astype(np.float32)


def _alias(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A woven texture (two square-wave thread sets) at k×, decimated by k, no antialiasing."""
    k = int(rng.integers(2, 5))
    h, w = img.shape[:2]
    big = _fine(img, k)
    yy, xx = np.mgrid[0 : h * k, 0 : w * k].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(*ALIAS_PERIOD) * k / 2
    u = (xx * np.cos(theta) + yy * np.sin(theta)) / period
    v = (-xx * np.sin(theta) + yy * np.cos(theta)) / (period * rng.uniform(0.8, 1.25))
    weave = 0.5 * ((np.mod(u, 1.0) < 0.5).astype(np.float32) + (np.mod(v, 1.0) < 0.5))
    depth = rng.uniform(0.15, 0.4)
    if big.ndim == 3:
        weave = weave[..., None]
    big *= 1.0 - depth * weave
    phase = (int(rng.integers(k)), int(rng.integers(k)))
    return _to_u8(big[phase[0] :: k, phase[1] :: k][:h, :w] * (1 + depth / 2))


def _bayer(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A fine grating near the sensor's Nyquist frequency through an RGGB mosaic, demosaiced."""
    colour = img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    h, w = colour.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(*BAYER_PERIOD)
    wave = np.cos(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period)
    amp = rng.uniform(0.15, 0.4)
    scene = colour.astype(np.float32) * (1 + amp * wave[..., None])
    mosaic = np.empty((h, w), np.float32)
    mosaic[0::2, 0::2] = scene[0::2, 0::2, 2]  # R
    mosaic[0::2, 1::2] = scene[0::2, 1::2, 1]  # G
    mosaic[1::2, 0::2] = scene[1::2, 0::2, 1]  # G
    mosaic[1::2, 1::2] = scene[1::2, 1::2, 0]  # B
    return cv2.cvtColor(_to_u8(mosaic), cv2.COLOR_BayerBG2BGR)  # R at (0, 0) in OpenCV's naming


def _lcd(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A screen with horizontal RGB stripes and dark column gaps, photographed rotated."""
    colour = img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    h, w = colour.shape[:2]
    pitch = rng.uniform(*LCD_PITCH)
    k = 4  # the screen rendered at 4 fine px per camera px
    big = cv2.resize(colour, (w * k, h * k), interpolation=cv2.INTER_NEAREST).astype(np.float32)
    yy, xx = np.mgrid[0 : h * k, 0 : w * k].astype(np.float32)
    cell = pitch * k
    row = np.floor(np.mod(yy, cell) / cell * 3).astype(np.int64)  # 0, 1, 2: R, G, B rows
    gap = (np.mod(xx, cell) < 0.2 * cell).astype(np.float32)
    mask = np.zeros_like(big)
    for c in range(3):
        mask[..., c] = (row == 2 - c) * (1 - 0.8 * gap)
    angle = rng.uniform(*LCD_ANGLE) * rng.choice([-1, 1])
    m = cv2.getRotationMatrix2D((w * k / 2, h * k / 2), angle, 1.0 / k)
    m[0, 2] += w / 2 - w * k / 2
    m[1, 2] += h / 2 - h * k / 2
    plane = cv2.GaussianBlur(big * mask * 2.6, (0, 0), k * rng.uniform(0.3, 0.5))
    return _to_u8(cv2.warpAffine(plane, m, (w, h), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT))


def _print_scan(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A CMY halftone print (dot screens at 15°, 75°, 0° + jitter) scanned by area averaging."""
    colour = img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    h, w = colour.shape[:2]
    k = 4
    big = _fine(colour, k) / 255.0
    yy, xx = np.mgrid[0 : h * k, 0 : w * k].astype(np.float32)
    period = rng.uniform(*PRINT_PERIOD) * k
    jitter = rng.uniform(-5, 5)
    ink = np.empty_like(big)
    for c, angle in enumerate((15.0, 75.0, 0.0)):  # C, M, Y screens act on R, G, B
        t = np.radians(angle + jitter)
        u = (xx * np.cos(t) + yy * np.sin(t)) * 2 * np.pi / period
        v = (-xx * np.sin(t) + yy * np.cos(t)) * 2 * np.pi / period
        dots = 0.5 + 0.25 * (np.cos(u) + np.cos(v))
        ink[..., 2 - c] = (big[..., 2 - c] > dots).astype(np.float32)
    scale = rng.uniform(0.9, 1.1) / k
    size = (round(w * k * scale), round(h * k * scale))
    out = cv2.resize(ink * 255.0, size, interpolation=cv2.INTER_AREA)
    out = cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)
    return _to_u8(out)



# --- generator c: a third family, degradations made another way -------------------------

#: Generator c's sub-labels (see :func:`_degrade_c`).
SUBLABELS_C: dict[str, tuple[str, ...]] = {
    "good": ("good", "good_jpeg"),
    "blurry": ("blurry_polygon", "blurry_arc", "blurry_resample", "blurry_field"),
    "moire": ("moire_delta", "moire_linescreen", "moire_mesh"),
}
C_JPEG_HARD = (30, 60)  # the heavily compressed good images
POLYGON_RADIUS = (2.0, 6.0)
POLYGON_BLADES = (5, 8)
ARC_LENGTH = (6.0, 22.0)
RESAMPLE_FACTOR = (2.0, 4.0)
FIELD_SIGMA = (1.2, 2.0, 3.0, 5.5)  # centre σ range, then corner σ range
DELTA_FINE_PIXELS = 4_000_000  # the rendered panel's size, bounding memory
DELTA_SCALE = (0.88, 1.12)  # camera px per panel pixel
LINESCREEN_PERIOD = (1.8, 4.0)  # output px
MESH_PERIOD = (1.2, 2.6)  # output px
C_NOISE_PROBABILITY = 0.35
C_FULL_WELL = (1500.0, 8000.0)  # shot noise σ at white: 2.9–6.6 grey levels
C_PNG_PROBABILITY = 0.2
C_JPEG_QUALITY = (70, 97)


def _degrade_c(img: np.ndarray, sub: str, rng: np.random.Generator) -> np.ndarray:
    """Generator c, written apart from a and b as a further held-out test.

    ``good``: as is; ``good_jpeg``: recompressed hard (JPEG quality 30–60: blocking and
    ringing, but no loss of focus). ``blurry_polygon``: defocus through a 5–8-blade
    polygonal aperture, radius 2–6 px; ``blurry_arc``: motion along a circular arc
    6–22 px long with the speed falling along it (a decelerating pan);
    ``blurry_resample``: shrunk 2–4× by dropping pixels, then enlarged with Lanczos
    (an upscaled thumbnail); ``blurry_field``: a lens whose blur grows from the centre
    (σ 1.2–2 px) to the corners (σ 3–5.5 px). ``moire_delta``: the picture shown on a
    delta-triangle (PenTile-like) RGB panel and photographed under perspective, the
    camera resampling it bilinearly at a non-integer scale; ``moire_linescreen``: an
    amplitude-modulated line-screen print (one angle) resampled bilinearly at a
    non-integer scale and a slant; ``moire_mesh``: the scene seen through a fine
    mesh (a fly screen or fabric, two thread sets) under perspective, point-sampled.
    """
    h, w = img.shape[:2]
    if sub == "good":
        return img
    if sub == "good_jpeg":
        quality = int(rng.integers(C_JPEG_HARD[0], C_JPEG_HARD[1] + 1))
        data = _encode(img, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, quality])
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if sub == "blurry_polygon":
        kernel = _polygon_kernel(rng.uniform(*POLYGON_RADIUS),
                                 int(rng.integers(POLYGON_BLADES[0], POLYGON_BLADES[1] + 1)),
                                 rng.uniform(0, 2 * np.pi))
        return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT)
    if sub == "blurry_arc":
        kernel = _arc_kernel(rng.uniform(*ARC_LENGTH), rng)
        return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT)
    if sub == "blurry_resample":
        f = rng.uniform(*RESAMPLE_FACTOR)
        small = cv2.resize(img, (max(4, round(w / f)), max(4, round(h / f))),
                           interpolation=cv2.INTER_NEAREST)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LANCZOS4)
    if sub == "blurry_field":
        return _field_blur(img, rng)
    if sub == "moire_delta":
        return _delta_panel(img, rng)
    if sub == "moire_linescreen":
        return _line_screen(img, rng)
    if sub == "moire_mesh":
        return _mesh(img, rng)
    raise ValueError(f"unknown sub-label {sub!r}")


def _finish_c(img: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    """Generator c's capture: shot noise then read noise (p 0.35) on luma only; PNG (p 0.2)
    or JPEG quality 70–97 with 4:4:4 or 4:2:0 chroma."""
    if rng.random() < C_NOISE_PROBABILITY:
        f = img.astype(np.float32)
        luma = f if f.ndim == 2 else f.mean(axis=2, keepdims=True)
        full_well = rng.uniform(*C_FULL_WELL)  # electrons at grey level 255
        shot = rng.poisson(np.maximum(luma, 0) * full_well / 255.0) * (255.0 / full_well)
        noise = (shot - luma) + rng.normal(0, rng.uniform(0.5, 1.5), luma.shape)
        img = _to_u8(f + noise)
    if rng.random() < C_PNG_PROBABILITY:
        return _encode(img, ".png", []), ".png"
    quality = int(rng.integers(C_JPEG_QUALITY[0], C_JPEG_QUALITY[1] + 1))
    sampling = cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444 if rng.random() < 0.5 else (
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420)
    return _encode(img, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, quality,
                                 cv2.IMWRITE_JPEG_SAMPLING_FACTOR, sampling]), ".jpg"


def _polygon_kernel(radius: float, blades: int, rotation: float) -> np.ndarray:
    """A regular `blades`-gon of circumradius `radius` px (a stopped-down iris), sum 1."""
    size = 2 * int(np.ceil(radius)) + 1
    ss = 8
    c = (size * ss - 1) / 2
    angles = rotation + 2 * np.pi * np.arange(blades) / blades
    pts = np.stack([c + radius * ss * np.cos(angles), c + radius * ss * np.sin(angles)], axis=1)
    canvas = np.zeros((size * ss, size * ss), np.float32)
    cv2.fillPoly(canvas, [np.rint(pts).astype(np.int32).reshape(-1, 1, 2)], 1.0,
                 lineType=cv2.LINE_AA)
    return _kernel_from(canvas, size)


def _arc_kernel(length: float, rng: np.random.Generator) -> np.ndarray:
    """Motion along a circular arc of `length` px, exposure falling linearly along it, sum 1."""
    turn = rng.uniform(0.3, 1.5) * rng.choice([-1, 1])  # radians the arc turns through
    start = rng.uniform(0, 2 * np.pi)
    radius = length / abs(turn)
    t = np.linspace(0.0, 1.0, 400)
    phi = start + turn * t
    x, y = radius * np.cos(phi), radius * np.sin(phi)
    x, y = x - (x.max() + x.min()) / 2, y - (y.max() + y.min()) / 2
    size = int(np.ceil(max(np.ptp(x), np.ptp(y)))) + 3 | 1
    ss = 8
    canvas = np.zeros((size * ss, size * ss), np.float32)
    c = (size * ss - 1) / 2
    weight = 1.0 - 0.7 * t  # decelerating: the start is exposed longest
    cols = np.clip(np.rint(c + x * ss).astype(np.int64), 0, size * ss - 1)
    rows = np.clip(np.rint(c + y * ss).astype(np.int64), 0, size * ss - 1)
    np.add.at(canvas, (rows, cols), weight.astype(np.float32))
    canvas = cv2.GaussianBlur(canvas, (0, 0), ss / 2)  # the line's width: one px
    return _kernel_from(canvas, size)


def _field_blur(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur growing with the distance from the centre (field curvature), two σ blended."""
    h, w = img.shape[:2]
    inner = cv2.GaussianBlur(img, (0, 0), rng.uniform(FIELD_SIGMA[0], FIELD_SIGMA[1]))
    outer = cv2.GaussianBlur(img, (0, 0), rng.uniform(FIELD_SIGMA[2], FIELD_SIGMA[3]))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.hypot((yy - h / 2) / (h / 2), (xx - w / 2) / (w / 2)) / np.sqrt(2)  # 0..1
    mix = np.clip(r, 0, 1) ** 1.5
    if img.ndim == 3:
        mix = mix[..., None]
    return _to_u8(inner * (1 - mix) + outer * mix)


def _perspective(w: int, h: int, rng: np.random.Generator, scale: float,
                 tilt: float) -> np.ndarray:
    """A homography from a (w·scale × h·scale) plane to a w × h camera frame that keeps the
    frame inside the plane: the plane scaled, rotated a little and tilted by up to `tilt`."""
    src_w, src_h = w * scale, h * scale
    margin = 0.06 + tilt
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    jitter = rng.uniform(-tilt, tilt, (4, 2)) * np.float32([w, h])
    inset = np.float32([[margin * w, margin * h], [(1 - margin) * w, margin * h],
                        [(1 - margin) * w, (1 - margin) * h], [margin * w, (1 - margin) * h]])
    plane = (inset + jitter) * np.float32([src_w / w, src_h / h])
    return cv2.getPerspectiveTransform(corners, plane.astype(np.float32))


def _delta_panel(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The picture on a delta-triangle RGB panel (each pixel three round sub-pixels in a
    triangle, alternate rows offset by half a pixel), photographed under perspective."""
    colour = img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    h, w = colour.shape[:2]
    # The panel rendered at `cell` fine px per pixel (at most DELTA_FINE_PIXELS in all).
    cell = min(12.0, float(np.sqrt(DELTA_FINE_PIXELS / (w * h))))
    big_w, big_h = round(w * cell), round(h * cell)
    screen = cv2.resize(colour, (big_w, big_h), interpolation=cv2.INTER_NEAREST)
    yy, xx = np.mgrid[0:big_h, 0:big_w].astype(np.float32)
    row = np.floor(yy / cell)
    shift = (row % 2) * 0.5
    u = np.mod(xx / cell + shift, 1.0)
    v = np.mod(yy / cell, 1.0)
    mask = np.zeros((big_h, big_w, 3), np.float32)
    centres = ((1 / 6, 0.3), (1 / 2, 0.7), (5 / 6, 0.3))  # R, G, B sub-pixels
    for channel, (cu, cv) in zip((2, 1, 0), centres, strict=True):
        mask[..., channel] = ((u - cu) ** 2 + (v - cv) ** 2 < 0.17**2)
    plane = screen.astype(np.float32) * mask * 3.2
    plane = cv2.GaussianBlur(plane, (0, 0), cell * rng.uniform(0.08, 0.2))  # the lens
    scale = rng.uniform(*DELTA_SCALE) * big_w / w
    homography = _perspective(w, h, rng, scale, tilt=0.04)
    shot = cv2.warpPerspective(plane, homography, (w, h),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT)
    return _to_u8(shot)


def _line_screen(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An AM line-screen print (ink lines whose width follows the tone, one angle),
    rendered at 4×, then resampled bilinearly (no antialiasing) at a non-integer scale."""
    h, w = img.shape[:2]
    k = 4
    big = _fine(img, k) / 255.0
    yy, xx = np.mgrid[0 : h * k, 0 : w * k].astype(np.float32)
    theta = np.radians(rng.uniform(0, 180))
    period = rng.uniform(*LINESCREEN_PERIOD) * k
    phase = np.mod((xx * np.cos(theta) + yy * np.sin(theta)) / period, 1.0)
    saw = np.abs(2 * phase - 1)  # 0 at the line's middle, 1 between lines
    if big.ndim == 3:
        saw = saw[..., None]
    ink = np.where(saw < 1.0 - big, 0.0, 1.0).astype(np.float32) * 255.0  # darker: wider lines
    ink = cv2.GaussianBlur(ink, (0, 0), rng.uniform(1.0, 2.5))  # ink spread, scanner optics
    homography = _perspective(w, h, rng, k * rng.uniform(0.92, 1.08), tilt=0.02)
    return _to_u8(cv2.warpPerspective(ink, homography, (w, h),
                                      flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                      borderMode=cv2.BORDER_REFLECT))


def _mesh(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The scene behind a fine mesh of dark threads (two sets, near-perpendicular), the
    mesh under perspective and point-sampled by the sensor (no antialiasing)."""
    h, w = img.shape[:2]
    k = 3
    yy, xx = np.mgrid[0 : h * k, 0 : w * k].astype(np.float32)
    homography = _perspective(w * k, h * k, rng, 1.0, tilt=0.05)
    warped = cv2.perspectiveTransform(np.dstack([xx, yy]).reshape(-1, 1, 2), homography)
    mx, my = warped[:, 0, 0].reshape(xx.shape), warped[:, 0, 1].reshape(xx.shape)
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(*MESH_PERIOD) * k
    skew = np.radians(rng.uniform(80, 100))
    u = np.mod((mx * np.cos(theta) + my * np.sin(theta)) / period, 1.0)
    v = np.mod((mx * np.cos(theta + skew) + my * np.sin(theta + skew)) / period, 1.0)
    thread = rng.uniform(0.25, 0.45)  # fraction of each period a thread covers
    cover = np.maximum(u < thread, v < thread).astype(np.float32)
    transmission = 1.0 - rng.uniform(0.3, 0.6) * cover
    phase = (int(rng.integers(k)), int(rng.integers(k)))
    sampled = transmission[phase[0] :: k, phase[1] :: k][:h, :w]
    f = img.astype(np.float32)
    if f.ndim == 3:
        sampled = sampled[..., None]
    return _to_u8(f * sampled / float(sampled.mean()))


# --- generator d: a fourth family, for training only --------------------------------------

#: Generator d's sub-labels (see :func:`_degrade_d`).
SUBLABELS_D: dict[str, tuple[str, ...]] = {
    "good": ("good_phone", "good_bokeh", "good_haze"),
    "blurry": ("blurry_noisy", "blurry_sharpened", "blurry_codec"),
    "moire": ("moire_fabric", "moire_curtain", "moire_scan"),
}
PHONE_SHARPEN_SIGMA = (1.2, 2.5)
PHONE_SHARPEN_AMOUNT = (0.3, 0.9)
BOKEH_RADIUS = (2.0, 6.0)  # the background's defocus
BOKEH_SUBJECT = (0.45, 0.65)  # semi-axes of the sharp subject, fractions of the sides
HAZE_TRANSMISSION = (0.35, 0.7)
HAZE_AIRLIGHT = (170.0, 235.0)
NOISY_BLUR_RADIUS = (2.0, 6.0)
NOISY_BLUR_NOISE = (3.0, 8.0)  # grey levels, added after the blur
SHARPENED_BLUR_SIGMA = (2.0, 4.0)
SHARPENED_BLUR_AMOUNT = (0.8, 2.0)
CODEC_KEEP = (2, 3)  # an 8×8 block keeps its DCT coefficients with u + v < this
CODEC_DEBLOCK = (0.7, 1.3)
FABRIC_PERIOD = (0.9, 1.8)  # output px: above the sensor's Nyquist frequency
FABRIC_DEPTH = (0.3, 0.6)
FABRIC_FOLD = (0.5, 4.0)  # output px
CURTAIN_PERIOD = (1.2, 2.2)  # output px, each of the two layers
CURTAIN_DEPTH = (0.3, 0.6)
SCAN_PERIOD = (1.5, 3.5)  # output px of the printed dot screen
D_NOISE_PROBABILITY = 0.35
D_WEBP_PROBABILITY = 0.3
D_WEBP_QUALITY = (75, 95)
D_JPEG_QUALITY = (72, 96)


def _degrade_d(img: np.ndarray, sub: str, rng: np.random.Generator) -> np.ndarray:
    """Generator d, degradations none of a, b and c makes; for training only.

    Written from how real pictures degrade, not from another generator's errors, so that
    ``c`` stays a fair held-out test. ``good_phone``: a phone's processing of an in-focus
    shot, edge-preserving denoise then an unsharp mask (σ 1.2–2.5 px, amount 0.3–0.9:
    halos); ``good_bokeh``: shallow depth of field, a sharp elliptical subject (semi-axes
    45–65 % of the sides) before a background defocused by a disk of radius 2–6 px;
    ``good_haze``: in focus but low in contrast, as through fog or haze (transmission
    0.35–0.7 towards a bright airlight). ``blurry_noisy``: defocus (radius 2–6 px) with
    low-light sensor noise added after it (σ 3–8 grey levels); ``blurry_sharpened``: a
    Gaussian blur (σ 2–4 px) that the phone denoises and sharpens hard (amount 0.8–2);
    ``blurry_codec``: a low-bitrate video frame, 8×8 DCT blocks keeping only their lowest
    frequencies (u + v < 2–3), then deblocked.
    ``moire_fabric``: a garment's fine weave (period 0.9–1.8 output px, bent by folds
    0.5–4 px deep) over part of the frame, aliased by the sensor; ``moire_curtain``: the scene
    through two layers of fine net (periods 1.2–2.2 px, a few percent and degrees apart),
    properly antialiased, so only their beat shows; ``moire_scan``: a newspaper's
    grey elliptical-dot halftone at any angle, scanned at a non-integer scale (bicubic).
    """
    if sub == "good_phone":
        return _phone(img, rng, rng.uniform(*PHONE_SHARPEN_AMOUNT))
    if sub == "good_bokeh":
        return _bokeh(img, rng)
    if sub == "good_haze":
        t = rng.uniform(*HAZE_TRANSMISSION)
        airlight = rng.uniform(*HAZE_AIRLIGHT) + rng.uniform(-10, 10, 3 if img.ndim == 3 else 1)
        return _to_u8(img.astype(np.float32) * t + airlight.astype(np.float32) * (1 - t))
    if sub == "blurry_noisy":
        blurred = cv2.filter2D(img, -1, _disk_kernel(rng.uniform(*NOISY_BLUR_RADIUS)),
                               borderType=cv2.BORDER_REFLECT)
        return _sensor_noise(blurred, rng, rng.uniform(*NOISY_BLUR_NOISE))
    if sub == "blurry_sharpened":
        blurred = cv2.GaussianBlur(img, (0, 0), rng.uniform(*SHARPENED_BLUR_SIGMA))
        return _phone(blurred, rng, rng.uniform(*SHARPENED_BLUR_AMOUNT))
    if sub == "blurry_codec":
        return _codec(img, rng)
    if sub == "moire_fabric":
        return _fabric(img, rng)
    if sub == "moire_curtain":
        return _curtain(img, rng)
    if sub == "moire_scan":
        return _newsprint(img, rng)
    raise ValueError(f"unknown sub-label {sub!r}")


def _finish_d(img: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    """Generator d's capture: luma and weaker chroma noise (p 0.35); WebP quality 75–95
    (p 0.3) or JPEG quality 72–96."""
    if rng.random() < D_NOISE_PROBABILITY:
        img = _sensor_noise(img, rng, rng.uniform(1.0, 3.5))
    if rng.random() < D_WEBP_PROBABILITY:
        quality = int(rng.integers(D_WEBP_QUALITY[0], D_WEBP_QUALITY[1] + 1))
        return _encode(img, ".webp", [cv2.IMWRITE_WEBP_QUALITY, quality]), ".webp"
    quality = int(rng.integers(D_JPEG_QUALITY[0], D_JPEG_QUALITY[1] + 1))
    return _encode(img, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, quality]), ".jpg"


def _sensor_noise(img: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Noise of `sigma` grey levels common to the channels (luma), plus a third as much in
    each channel apart (chroma)."""
    f = img.astype(np.float32)
    noise = rng.normal(0, sigma, img.shape[:2]).astype(np.float32)
    if f.ndim == 3:
        chroma = rng.normal(0, sigma / 3, f.shape).astype(np.float32)
        return _to_u8(f + noise[..., None] + chroma)
    return _to_u8(f + noise)


def _phone(img: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """A phone's processing: an edge-preserving (bilateral) denoise, then an unsharp mask."""
    smooth = cv2.bilateralFilter(img, 5, rng.uniform(8.0, 20.0), 2.0).astype(np.float32)
    soft = cv2.GaussianBlur(smooth, (0, 0), rng.uniform(*PHONE_SHARPEN_SIGMA))
    return _to_u8(smooth * (1 + amount) - soft * amount)


def _bokeh(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A sharp elliptical subject before a defocused background, the edge feathered."""
    h, w = img.shape[:2]
    background = cv2.filter2D(img, -1, _disk_kernel(rng.uniform(*BOKEH_RADIUS)),
                              borderType=cv2.BORDER_REFLECT).astype(np.float32)
    mask = np.zeros((h, w), np.float32)
    centre = (round(w * rng.uniform(0.4, 0.6)), round(h * rng.uniform(0.4, 0.6)))
    axes = (round(w * rng.uniform(*BOKEH_SUBJECT)), round(h * rng.uniform(*BOKEH_SUBJECT)))
    cv2.ellipse(mask, centre, axes, rng.uniform(0, 180), 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 0.04 * min(h, w))
    if img.ndim == 3:
        mask = mask[..., None]
    return _to_u8(img.astype(np.float32) * mask + background * (1 - mask))


def _block_dct_matrix(n: int = 8) -> np.ndarray:
    k = np.arange(n)
    m = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m.astype(np.float32)  # orthonormal: the inverse is its transpose


def _codec(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each 8×8 block of each YCrCb plane keeps its DCT coefficients with u + v < keep (the
    rest quantised away), then a deblocking filter smooths what is left of the blocks."""
    h, w = img.shape[:2]
    keep = int(rng.integers(CODEC_KEEP[0], CODEC_KEEP[1] + 1))
    planes = cv2.cvtColor(img, cv2.COLOR_BGR2YCrCb) if img.ndim == 3 else img[..., None]
    ph, pw = -(-h // 8) * 8, -(-w // 8) * 8
    f = cv2.copyMakeBorder(planes, 0, ph - h, 0, pw - w, cv2.BORDER_REFLECT).astype(np.float32)
    f = f.reshape(ph, pw, -1)
    d = _block_dct_matrix()
    u, v = np.mgrid[0:8, 0:8]
    low = (u + v < keep).astype(np.float32)
    blocks = f.reshape(ph // 8, 8, pw // 8, 8, -1)
    coef = np.einsum("ij,ajbkc,lk->aiblc", d, blocks, d)  # D·X·Dᵀ per block
    coef *= low[None, :, None, :, None]
    back = np.einsum("ij,aibkc,kl->ajblc", d, coef, d).reshape(ph, pw, -1)[:h, :w]
    back = cv2.GaussianBlur(back, (0, 0), rng.uniform(*CODEC_DEBLOCK))
    out = _to_u8(back.reshape(h, w, -1))
    return cv2.cvtColor(out, cv2.COLOR_YCrCb2BGR) if img.ndim == 3 else out[..., 0]


def _fabric(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A fine woven garment over part of the frame, its threads bent by folds, sampled by a
    sensor whose optical low-pass filter is too weak for it."""
    h, w = img.shape[:2]
    k = 3
    big = _fine(img, k)
    yy, xx = np.mgrid[0 : h * k, 0 : w * k].astype(np.float32)
    fold = rng.uniform(*FABRIC_FOLD) * k  # how far the folds bend the threads
    wave = rng.uniform(0.15, 0.5) * k * 2 * np.pi / max(h, w)
    bend = fold * np.sin(xx * wave + rng.uniform(0, 6.3)) * np.cos(yy * wave * 0.7)
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(*FABRIC_PERIOD) * k
    u = (xx * np.cos(theta) + yy * np.sin(theta) + bend) / period
    v = (-xx * np.sin(theta) + yy * np.cos(theta) + 0.5 * bend) / (period * rng.uniform(0.9, 1.1))
    weave = 0.5 + 0.25 * (np.cos(2 * np.pi * u) + np.cos(2 * np.pi * v))  # warp and weft
    garment = np.zeros((h * k, w * k), np.float32)
    centre = (round(w * k * rng.uniform(0.35, 0.65)), round(h * k * rng.uniform(0.35, 0.65)))
    axes = (round(w * k * rng.uniform(0.3, 0.5)), round(h * k * rng.uniform(0.3, 0.5)))
    cv2.ellipse(garment, centre, axes, rng.uniform(0, 180), 0, 360, 1.0, -1)
    garment = cv2.GaussianBlur(garment, (0, 0), k * 2.0)
    shade = 1.0 - rng.uniform(*FABRIC_DEPTH) * weave * garment
    if big.ndim == 3:
        shade = shade[..., None]
    optics = cv2.GaussianBlur(big * shade, (0, 0), k * rng.uniform(0.15, 0.3))
    phase = (int(rng.integers(k)), int(rng.integers(k)))
    return _to_u8(optics[phase[0] :: k, phase[1] :: k][:h, :w])


def _curtain(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The scene through two layers of fine net (square-wave threads, each layer's period
    and angle a little apart), area-averaged to the sensor: only the layers' beat survives."""
    h, w = img.shape[:2]
    k = 3
    big = _fine(img, k)
    yy, xx = np.mgrid[0 : h * k, 0 : w * k].astype(np.float32)
    period = rng.uniform(*CURTAIN_PERIOD) * k
    theta = rng.uniform(0, np.pi)
    transmission = np.ones_like(yy)
    for layer in range(2):
        t = theta + (np.radians(rng.uniform(1, 8)) * rng.choice([-1, 1]) if layer else 0.0)
        p = period * (rng.uniform(0.94, 1.06) if layer else 1.0)
        u = np.mod((xx * np.cos(t) + yy * np.sin(t)) / p, 1.0)
        v = np.mod((-xx * np.sin(t) + yy * np.cos(t)) / p, 1.0)
        thread = np.maximum(u < 0.3, v < 0.3).astype(np.float32)
        transmission *= 1.0 - rng.uniform(*CURTAIN_DEPTH) * thread
    if big.ndim == 3:
        transmission = transmission[..., None]
    seen = big * transmission / float(transmission.mean())
    return _to_u8(cv2.resize(seen, (w, h), interpolation=cv2.INTER_AREA))


def _newsprint(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A grey elliptical-dot halftone (one screen, any angle) printed at 4×, scanned: the
    scanner's optics, then a bicubic resampling at a non-integer scale."""
    grey = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    h, w = grey.shape
    k = 4
    big = _fine(grey, k) / 255.0
    yy, xx = np.mgrid[0 : h * k, 0 : w * k].astype(np.float32)
    t = np.radians(rng.uniform(0, 180))
    period = rng.uniform(*SCAN_PERIOD) * k
    u = (xx * np.cos(t) + yy * np.sin(t)) * 2 * np.pi / period
    v = (-xx * np.sin(t) + yy * np.cos(t)) * 2 * np.pi / period
    dots = 0.5 + 0.3 * np.cos(u) + 0.2 * np.cos(v)  # elliptical dots joining into chains
    paper = rng.uniform(225.0, 250.0)
    ink = np.where(big > dots, paper, rng.uniform(15.0, 40.0)).astype(np.float32)
    ink = cv2.GaussianBlur(ink, (0, 0), k * rng.uniform(0.2, 0.4))
    scale = rng.uniform(0.85, 1.15)
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    return _to_u8(cv2.resize(ink, size, interpolation=cv2.INTER_CUBIC))


# --- generator e: a fifth family, for training only --------------------------------------

#: Generator e's sub-labels (see :func:`_degrade_e`).
SUBLABELS_E: dict[str, tuple[str, ...]] = {
    "good": ("good", "good_night", "good_lens", "good_hdr"),
    "blurry": ("blurry_rescaled", "blurry_jpeg", "blurry_subject"),
    "moire": ("moire_monitor", "moire_blinds", "moire_brick"),
}
NIGHT_EXPOSURE = (0.12, 0.3)  # of the scene's light, in linear light, then gained back
NIGHT_FULL_WELL = (400.0, 1500.0)  # electrons at full scale before the gain
VIGNETTE = (0.2, 0.45)  # light lost in the corners
LATERAL_CA = (0.5, 1.5)  # red and blue shifted this many px at the corners, opposite ways
HDR_CLIP = (1.5, 3.0)
RESCALE_PREBLUR = (0.6, 1.5)
RESCALE_FACTOR = (1.7, 3.5)
RESCALE_INTERPOLATORS = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_LANCZOS4)
JPEG_BLUR_SIGMA = (1.5, 4.0)
JPEG_BLUR_QUALITY = (12, 35)
SUBJECT_MOTION = (12.0, 32.0)
SUBJECT_SIZE = (0.3, 0.45)  # semi-axes, fractions of the sides
SUBJECT_SHAKE = (0.8, 1.6)  # the whole frame's softness (σ px): a long handheld exposure
MONITOR_PITCH = (1.3, 2.6)  # camera px per screen pixel
MONITOR_ANGLE = (0.0, 20.0)
BLINDS_PERIOD = (0.7, 1.3, 2.2, 4.0)  # near end's period range, then far end's (output px)
BRICK_HEIGHT = (0.8, 1.8)  # output px per course
E_NOISE_PROBABILITY = 0.3
E_PNG_PROBABILITY = 0.15
E_JPEG_QUALITY = (70, 95)


def _degrade_e(img: np.ndarray, sub: str, rng: np.random.Generator) -> np.ndarray:
    """Generator e, kinds of degradation none of a, b, c and d makes; for training only.

    Written from how real pictures degrade, not from ``c``'s errors (``c`` stays a fair
    held-out test). ``good``: as is; ``good_night``: a short exposure (12–30 % of the light,
    in linear light) with shot noise, gained back to a normal brightness: noisy shadows,
    focus intact; ``good_lens``: vignetting (20–45 % of the light lost in the corners) and
    lateral chromatic aberration (red and blue 0.5–1.5 px apart at the corners);
    ``good_hdr``: a phone's local tone mapping (CLAHE on the lightness, clip 1.5–3).
    ``blurry_rescaled``: softened (σ 0.6–1.5 px), shrunk 1.7–3.5× and enlarged back with a
    bilinear, bicubic or Lanczos filter; ``blurry_jpeg``: blurred (σ 1.5–4 px), then saved
    as JPEG quality 12–35 (its blocks and ringing are not detail); ``blurry_subject``: a
    long handheld exposure (the frame softened, σ 0.8–1.6 px) in which the subject, an
    ellipse of 30–45 % of the sides, moved 12–32 px (no missed focus: see the module's
    docstring). ``moire_monitor``: a computer screen (RGB stripes, 1.3–2.6 camera px per
    screen pixel, 0–20° rotated, slight perspective) photographed through a Bayer colour
    filter and demosaiced (colour moiré);
    ``moire_blinds``: window blinds or railings receding in perspective over a part of the
    frame, their period growing from 0.7–1.3 to 2.2–4 px across it, point-sampled (beats
    where the period nears 1 and 2 px); ``moire_brick``: a distant brick wall or tiled roof
    (courses 0.8–1.8 px high, staggered joints) over a band of the frame, point-sampled.
    """
    if sub == "good":
        return img
    if sub == "good_night":
        return _night(img, rng)
    if sub == "good_lens":
        return _lens(img, rng)
    if sub == "good_hdr":
        return _local_tone_map(img, rng)
    if sub == "blurry_rescaled":
        return _rescaled(img, rng)
    if sub == "blurry_jpeg":
        blurred = cv2.GaussianBlur(img, (0, 0), rng.uniform(*JPEG_BLUR_SIGMA))
        quality = int(rng.integers(JPEG_BLUR_QUALITY[0], JPEG_BLUR_QUALITY[1] + 1))
        data = _encode(blurred, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, quality])
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if sub == "blurry_subject":
        return _moving_subject(img, rng)
    if sub == "moire_monitor":
        return _monitor(img, rng)
    if sub == "moire_blinds":
        return _blinds(img, rng)
    if sub == "moire_brick":
        return _brick(img, rng)
    raise ValueError(f"unknown sub-label {sub!r}")


def _finish_e(img: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    """Generator e's capture: luma and weaker chroma noise (p 0.3, σ 1–3); PNG (p 0.15) or
    JPEG quality 70–95."""
    if rng.random() < E_NOISE_PROBABILITY:
        img = _sensor_noise(img, rng, rng.uniform(1.0, 3.0))
    if rng.random() < E_PNG_PROBABILITY:
        return _encode(img, ".png", []), ".png"
    quality = int(rng.integers(E_JPEG_QUALITY[0], E_JPEG_QUALITY[1] + 1))
    return _encode(img, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, quality]), ".jpg"


def _radius(h: int, w: int) -> np.ndarray:
    """Each pixel's distance from the centre, 1 at the corners."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2) / np.hypot((h - 1) / 2, (w - 1) / 2)


def _night(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A short exposure in linear light with shot and read noise, gained back (sRGB-like
    gamma 2.2): the noise is strongest in the shadows; the focus is untouched."""
    exposure = rng.uniform(*NIGHT_EXPOSURE)
    full_well = rng.uniform(*NIGHT_FULL_WELL)
    linear = (img.astype(np.float32) / 255.0) ** 2.2 * exposure
    electrons = rng.poisson(linear * full_well).astype(np.float32)
    electrons += rng.normal(0, rng.uniform(1.0, 3.0), img.shape).astype(np.float32)
    gained = np.clip(electrons / (full_well * exposure), 0, 1)
    return _to_u8(255.0 * gained ** (1 / 2.2))


def _lens(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Vignetting (cos⁴-like fall-off) and lateral chromatic aberration (red and blue
    magnified a little apart about the centre)."""
    h, w = img.shape[:2]
    falloff = 1.0 - rng.uniform(*VIGNETTE) * _radius(h, w) ** 2
    f = img.astype(np.float32)
    if f.ndim == 3:
        shift = rng.uniform(*LATERAL_CA) / np.hypot(h / 2, w / 2)  # relative magnification
        for channel, sign in ((2, 1.0), (0, -1.0)):
            m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), 0.0, 1.0 + sign * shift)
            f[..., channel] = cv2.warpAffine(f[..., channel], m, (w, h),
                                             flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        falloff = falloff[..., None]
    return _to_u8(f * falloff)


def _local_tone_map(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A phone's HDR look: CLAHE on the lightness (L of Lab), colour kept."""
    tiles = int(rng.integers(4, 9))
    clahe = cv2.createCLAHE(clipLimit=rng.uniform(*HDR_CLIP), tileGridSize=(tiles, tiles))
    if img.ndim == 2:
        return clahe.apply(img)
    lab = cv2.cvtColor(img, cv2.COLOR_BGR2LAB)
    lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


def _rescaled(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Softened, shrunk by a non-integer factor (area or bilinear) and enlarged back with one
    of several interpolators: a small, soft picture shown at a larger size."""
    h, w = img.shape[:2]
    soft = cv2.GaussianBlur(img, (0, 0), rng.uniform(*RESCALE_PREBLUR))
    f = rng.uniform(*RESCALE_FACTOR)
    down = cv2.INTER_AREA if rng.random() < 0.5 else cv2.INTER_LINEAR
    small = cv2.resize(soft, (max(8, round(w / f)), max(8, round(h / f))), interpolation=down)
    up = RESCALE_INTERPOLATORS[int(rng.integers(len(RESCALE_INTERPOLATORS)))]
    return cv2.resize(small, (w, h), interpolation=up)


def _moving_subject(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A long handheld exposure: the whole frame a little soft, and the subject (a feathered
    ellipse near the centre) smeared along its own motion."""
    h, w = img.shape[:2]
    soft = cv2.GaussianBlur(img, (0, 0), rng.uniform(*SUBJECT_SHAKE)).astype(np.float32)
    kernel = _motion_kernel(rng.uniform(*SUBJECT_MOTION), rng.uniform(0, 180))
    moved = cv2.filter2D(soft, -1, kernel, borderType=cv2.BORDER_REFLECT)
    mask = np.zeros((h, w), np.float32)
    centre = (round(w * rng.uniform(0.35, 0.65)), round(h * rng.uniform(0.35, 0.65)))
    axes = (round(w * rng.uniform(*SUBJECT_SIZE)), round(h * rng.uniform(*SUBJECT_SIZE)))
    cv2.ellipse(mask, centre, axes, rng.uniform(0, 180), 0, 360, 1.0, -1)
    mask = cv2.filter2D(mask, -1, kernel, borderType=cv2.BORDER_REFLECT)  # a moving edge
    mask = cv2.GaussianBlur(mask, (0, 0), 0.02 * min(h, w))
    if img.ndim == 3:
        mask = mask[..., None]
    return _to_u8(moved * mask + soft * (1 - mask))


def _monitor(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A computer screen showing the picture (vertical R, G, B stripes, a dark gap between
    rows), photographed rotated and under slight perspective: the lens, the pixels' area,
    then a Bayer (RGGB) colour filter and a demosaic."""
    colour = img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    h, w = colour.shape[:2]
    k = 3 if h * w <= 700_000 else 2  # fine px per camera px, bounding memory
    pitch = rng.uniform(*MONITOR_PITCH)
    # The screen shows the picture at its own resolution: one screen pixel per `pitch` px.
    sw, sh = max(8, round(w / pitch)), max(8, round(h / pitch))
    shown = cv2.resize(colour, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32)
    angle = np.radians(rng.uniform(*MONITOR_ANGLE) * rng.choice([-1, 1]))
    # Fine camera px → screen px: a rotation about the centre, then a slight perspective.
    yy, xx = np.mgrid[0 : h * k, 0 : w * k].astype(np.float32)
    cx, cy = (xx / k - w / 2) / pitch, (yy / k - h / 2) / pitch
    tilt = rng.uniform(-0.25, 0.25, 2) / max(sw, sh)
    depth = 1.0 + tilt[0] * cx + tilt[1] * cy
    zoom = 0.9  # the camera frames 90 % of the screen: the rotated view stays on it
    sx = (np.cos(angle) * cx - np.sin(angle) * cy) * zoom / depth + sw / 2
    sy = (np.sin(angle) * cx + np.cos(angle) * cy) * zoom / depth + sh / 2
    sx, sy = sx.astype(np.float32), sy.astype(np.float32)
    # Screen pixel i spans [i, i + 1): nearest-neighbour remap looks up round(x - 0.5).
    pixel = cv2.remap(shown, sx - 0.5, sy - 0.5, cv2.INTER_NEAREST,
                      borderMode=cv2.BORDER_REFLECT)
    u, v = np.mod(sx, 1.0), np.mod(sy, 1.0)
    lit = (v < 0.85).astype(np.float32)  # the black matrix between rows
    mask = np.stack([(u >= 2 / 3) * lit, ((u >= 1 / 3) & (u < 2 / 3)) * lit, (u < 1 / 3) * lit],
                    axis=-1).astype(np.float32)  # B, G, R: red stripe on the left
    plane = cv2.GaussianBlur(pixel * mask * (3.0 / 0.85), (0, 0), k * rng.uniform(0.25, 0.45))
    sensor = cv2.resize(plane, (w, h), interpolation=cv2.INTER_AREA)  # each pixel's area
    mosaic = np.empty((h, w), np.float32)
    mosaic[0::2, 0::2] = sensor[0::2, 0::2, 2]  # R
    mosaic[0::2, 1::2] = sensor[0::2, 1::2, 1]  # G
    mosaic[1::2, 0::2] = sensor[1::2, 0::2, 1]  # G
    mosaic[1::2, 1::2] = sensor[1::2, 1::2, 0]  # B
    return cv2.cvtColor(_to_u8(mosaic * rng.uniform(0.85, 1.0)), cv2.COLOR_BayerBG2BGR)


def _region(h: int, w: int, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    """A feathered half-plane covering a fraction `lo`–`hi` of the frame (one side of a line
    at any angle): where a wall, a window or a roof is in the picture."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    t = (xx - w / 2) * np.cos(theta) + (yy - h / 2) * np.sin(theta)
    edge = np.quantile(t, 1.0 - rng.uniform(lo, hi))
    return np.clip((t - edge) / 3.0 + 0.5, 0.0, 1.0)


def _blinds(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Slats (blinds, a railing, corrugated sheet) receding in perspective over part of the
    frame: their period grows from the near end to the far end, point-sampled by the sensor."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    s = xx * np.cos(theta) + yy * np.sin(theta)
    length = float(s.max() - s.min())
    t = (s - s.min()) / length  # 0 at the near end, 1 at the far one
    near = rng.uniform(BLINDS_PERIOD[0], BLINDS_PERIOD[1])
    far = rng.uniform(BLINDS_PERIOD[2], BLINDS_PERIOD[3])
    kappa = np.sqrt(far / near) - 1.0  # local period near·(1 + κt)²
    phase = length / near * t / (1.0 + kappa * t)
    slat = (np.mod(phase + rng.uniform(0, 1), 1.0) < rng.uniform(0.4, 0.65)).astype(np.float32)
    cover = slat * _region(h, w, rng, 0.5, 1.0)
    tone = rng.uniform(0.35, 0.7)  # the slats' shade against the scene behind
    if img.ndim == 3:
        cover = cover[..., None]
    return _to_u8(img.astype(np.float32) * (1.0 - (1.0 - tone) * cover))


def _brick(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A distant brick wall or tiled roof (mortar lines, joints staggered every other course)
    over a band of the frame, slightly rotated, point-sampled by the sensor."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = np.radians(rng.uniform(-20, 20))
    course = rng.uniform(*BRICK_HEIGHT)
    u = (xx * np.cos(theta) + yy * np.sin(theta)) / (course * rng.uniform(1.8, 2.6))
    v = (-xx * np.sin(theta) + yy * np.cos(theta)) / course
    row = np.floor(v)
    u = u + 0.5 * np.mod(row, 2)  # staggered joints
    mortar = (np.mod(v, 1.0) < 0.25) | (np.mod(u, 1.0) < 0.12)
    cover = mortar.astype(np.float32) * _region(h, w, rng, 0.35, 0.8)
    depth = rng.uniform(0.3, 0.55)
    if img.ndim == 3:
        cover = cover[..., None]
    return _to_u8(img.astype(np.float32) * (1.0 - depth * cover))


#: Generator name → (sub-labels per label, degradation, capture/encoding).
GENERATORS: dict[
    str,
    tuple[
        dict[str, tuple[str, ...]],
        Callable[[np.ndarray, str, np.random.Generator], np.ndarray],
        Callable[[np.ndarray, np.random.Generator], tuple[bytes, str]],
    ],
] = {
    "a": (SUBLABELS, _degrade, _finish_a),
    "b": (SUBLABELS_B, _degrade_b, _finish_b),
    "c": (SUBLABELS_C, _degrade_c, _finish_c),
    "d": (SUBLABELS_D, _degrade_d, _finish_d),
    "e": (SUBLABELS_E, _degrade_e, _finish_e),
}
